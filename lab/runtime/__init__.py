"""The IoT Edge runtime test double: its Debian packages (``packages``) and the code they install (``double``)."""
