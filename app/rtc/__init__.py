"""Live calls over WebRTC, relay-only through TURN: the tutor's voice and lip-synced face out,
the student's microphone in."""
