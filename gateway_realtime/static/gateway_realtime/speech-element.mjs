// <gateway-realtime-speech>: being written (issue 13); elements.mjs imports it.
