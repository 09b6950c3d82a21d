"""ChatCore: a local research assistant engine — model sources, decoding, chat templating, service layer."""

__version__ = "0.1.0"
