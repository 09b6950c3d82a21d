"""ChatCore's web app entry point: ``python app.py --host 127.0.0.1 --port 7860``; the page is ``chatcore.web``."""

from chatcore.web.server import main

if __name__ == "__main__":
    main()
