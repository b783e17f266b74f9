"""Avatars: a teacher's video prepared into a talking head, and the lip-sync engines that
animate it from the tutor's speech."""
