// <gateway-realtime-dictation>: being written (issue 13); elements.mjs imports it.
