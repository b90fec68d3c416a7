"""The console's modal screens: questions before a change, prompts, and detail cards (styled in app.tcss)."""
