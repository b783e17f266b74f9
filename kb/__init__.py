"""Knowledge bases: course material in, grounded passages with their sources out."""
