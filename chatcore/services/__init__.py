"""What the front ends call: chat, models, notes, templates, accounts. No web or HTTP here."""
