"""Virtual Tutor's web side: API routes, WebSocket, UI, sessions and the real-time pipeline."""
