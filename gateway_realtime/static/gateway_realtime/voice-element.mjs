// <gateway-realtime-voice>: being written (issue 13); elements.mjs imports it.
