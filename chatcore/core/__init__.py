"""The layer everything stands on: errors, typed events, parameters, settings, chat templating. No torch."""
