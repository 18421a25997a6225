"""Running embarrassingly parallel work on Ray (an optional extra: ``pip install -e ".[ray]"``).

Nothing here knows about models or images: pipelines hand in the actor class that does the work.
"""
