"""
The echo processor: replies with the body it got, under a new command and
with a header of its own.

    > LHTTP/1.0 echo\\r\\n\\r\\nhello
    < LHTTP/1.0 echoed\\r\\necho-by:lhttp\\r\\n\\r\\nhello
"""

from lhttp import Processor


class EchoProcessor(Processor):
    def onMessage(self, connection, message):
        connection.setCommand("echoed")
        connection.setHeader("echo-by", "lhttp")
        connection.send(message.body)
