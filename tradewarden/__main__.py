"""`python -m tradewarden` is the `tradewarden` command."""

from server.cli import main

if __name__ == "__main__":
    main(prog_name="tradewarden")
