"""The command-line adapter: parse -> call a use case -> render.

Only this package imports click and rich. Errors of the ``SuretyError`` tree
become one line on stderr and their exit code; nothing else is caught, so a
bug still shows its traceback.
"""
