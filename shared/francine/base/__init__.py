"""The base: errors, settings (read from the environment here and nowhere else), logging
and small concurrency helpers. Imports nothing of Francine; everything may import it."""
