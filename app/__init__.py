"""Virtual Tutor's application: `core` is the floor, `speech` and `conversation` are domain
packages (with `tutors`, `kb`, `avatars` and `turn` beside `app`), and the rest is the web layer:
REST routes, the WebSocket, live calls, the UI and the composition (see the README's Layout)."""
