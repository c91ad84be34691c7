"""
Adds the example processors to C{twistd lhttp}: put the C{examples} folder
on the Python path (C{PYTHONPATH=examples twistd -n lhttp}) and the
commands C{echo} and C{upload} are handled. Your own plugins look the same.
"""

from lhttp.plugin import ProcessorPlugin

echo = ProcessorPlugin("echo", "lhttp_examples.echo.EchoProcessor", "Echo the body back.")
upload = ProcessorPlugin("upload", "lhttp_examples.upload.UploadProcessor", "Read multipart parts.")
