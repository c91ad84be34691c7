"""
The upload processor: reads the parts of a multipart body and answers with
what it found, as JSON.

    > LHTTP/1.0 upload\\r\\nmultipart:0 14\\r\\n\\r\\nk1:v1\\r\\n\\r\\nbody1k2:v2\\r\\n\\r\\nbody2
    < LHTTP/1.0 uploaded\\r\\nparts:2\\r\\ncontent-type:json\\r\\n\\r\\n
      [{"headers": [["k1", "v1"]], "body": "body1"}, {"headers": [["k2", "v2"]], "body": "body2"}]
"""

import json

from lhttp import Processor
from lhttp.errors import BadMultipart


class UploadProcessor(Processor):
    def onMessage(self, connection, message):
        parts = connection.getParts()
        if not parts:
            raise BadMultipart("upload wants a multipart body (a 'multipart' header)")
        summary = [
            {"headers": part.headers, "body": part.body.decode("utf-8", "replace")}
            for part in parts
        ]
        connection.setCommand("uploaded")
        connection.setHeader("parts", str(len(parts)))
        connection.setHeader("content-type", "json")
        connection.send(json.dumps(summary))
