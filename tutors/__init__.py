"""Tutors that teachers build, and the LLM engines that voice them."""
