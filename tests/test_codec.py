"""
The codec against SPEC section 1's canonical vectors, malformed input, and
hypothesis properties (round-trip, never crash with anything but our error).
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lhttp.codec import Message, Part, parse, parseMultipart, serialize, serializeMultipart
from lhttp.errors import BadMultipart, LHTTPError, MalformedMessage

VECTOR_CHAT = b'LHTTP/1.0 chat\r\ncontent-type:json\r\npublish:channel_jack\r\n\r\n{"to":"jack"}'
VECTOR_SUBPUB = b"LHTTP/1.0 subpub\r\nsubscribe:channelID1 channelID2 channelID3\r\n\r\n"
VECTOR_UPLOAD = b"LHTTP/1.0 upload\r\nmultipart:0 14\r\n\r\nk1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2"


class VectorTests(SynchronousTestCase):
    def test_chat(self):
        message = parse(VECTOR_CHAT)
        self.assertEqual(message.command, "chat")
        self.assertEqual(message.headers, [("content-type", "json"), ("publish", "channel_jack")])
        self.assertEqual(message.body, b'{"to":"jack"}')
        self.assertEqual(serialize(message), VECTOR_CHAT)

    def test_subpub(self):
        message = parse(VECTOR_SUBPUB)
        self.assertEqual(message.command, "subpub")
        self.assertEqual(message.getHeader("subscribe").split(), ["channelID1", "channelID2", "channelID3"])
        self.assertEqual(message.body, b"")
        self.assertEqual(serialize(message), VECTOR_SUBPUB)

    def test_upload(self):
        message = parse(VECTOR_UPLOAD)
        self.assertEqual(message.command, "upload")
        self.assertEqual(message.getHeader("multipart"), "0 14")
        parts = parseMultipart(message.body, message.getHeader("multipart"))
        self.assertEqual(parts, [Part([("k1", "v1")], b"body1"), Part([("k2", "v2")], b"body2")])
        self.assertEqual(serialize(message), VECTOR_UPLOAD)
        self.assertEqual(serializeMultipart(parts), ("0 14", message.body))


class HeaderTests(SynchronousTestCase):
    def test_spacesAroundValueStripped(self):
        message = parse(b"LHTTP/1.0 c\r\npublish: a b \t\r\n\r\n")
        self.assertEqual(message.getHeader("publish"), "a b")

    def test_valueKeepsColons(self):
        message = parse(b"LHTTP/1.0 c\r\nupstream:POST http://h:8080/x\r\n\r\n")
        self.assertEqual(message.getHeader("upstream"), "POST http://h:8080/x")

    def test_caseInsensitiveNamesKeepSpelling(self):
        message = parse(b"LHTTP/1.0 c\r\nContent-Type:json\r\n\r\n")
        self.assertEqual(message.getHeader("content-type"), "json")
        self.assertEqual(message.headers, [("Content-Type", "json")])

    def test_rawKeptForVerbatimRelay(self):
        data = b"LHTTP/1.0 c\r\npublish: a\r\n\r\nx"
        self.assertEqual(parse(data).toBytes(), data)

    def test_bodyMayHoldBlankLines(self):
        message = parse(b"LHTTP/1.0 c\r\n\r\nline\r\n\r\nmore")
        self.assertEqual(message.body, b"line\r\n\r\nmore")

    def test_serializeRefusesInjection(self):
        self.assertRaises(ValueError, serialize, Message("c", [("x", "1\r\npublish:all")]))
        self.assertRaises(ValueError, serialize, Message("two words"))
        self.assertRaises(ValueError, serialize, Message("c", [("a:b", "1")]))


class MalformedTests(SynchronousTestCase):
    def assertMalformed(self, data, words):
        error = self.assertRaises(MalformedMessage, parse, data)
        self.assertEqual(error.status, 400)
        self.assertIn(words, str(error))

    def test_noBlankLine(self):
        self.assertMalformed(b"LHTTP/1.0 chat\r\npublish:a\r\n", "no blank line")

    def test_badStartLine(self):
        self.assertMalformed(b"HTTP/1.1 chat\r\n\r\n", "start line")
        self.assertMalformed(b"LHTTP/2.0 chat\r\n\r\n", "start line")
        self.assertMalformed(b"LHTTP/1.0 \r\n\r\n", "command")
        self.assertMalformed(b"LHTTP/1.0 two words\r\n\r\n", "command")

    def test_badHeaders(self):
        self.assertMalformed(b"LHTTP/1.0 c\r\nnocolon\r\n\r\n", "no ':'")
        self.assertMalformed(b"LHTTP/1.0 c\r\n:v\r\n\r\n", "bad name")
        self.assertMalformed(b"LHTTP/1.0 c\r\na\nb:v\r\n\r\n", "bad name")
        self.assertMalformed(b"LHTTP/1.0 c\r\na:v\nx\r\n\r\n", "CR, LF or NUL")
        self.assertMalformed(b"LHTTP/1.0 c\r\na:\xff\r\n\r\n", "UTF-8")

    def test_commandKnownWhenTheStartLineIsReadable(self):
        """
        The error carries the command whenever the start line could be
        read, so the error reply can echo it.
        """
        cases = [
            (b"LHTTP/1.0 chat\r\npublish:a\r\n", {}, "chat"),
            (b"LHTTP/1.0 chat\r\nnocolon\r\n\r\n", {}, "chat"),
            (b"LHTTP/1.0 chat\r\na:\xff\r\n\r\n", {}, "chat"),
            (b"LHTTP/1.0 chat\r\n" + b"h:v\r\n" * 3 + b"\r\n", {"maxHeaders": 2}, "chat"),
            (b"LHTTP/1.0 chat\r\nh:" + b"v" * 99 + b"\r\n\r\n", {"maxLineLength": 50}, "chat"),
            (b"LHTTP/1.0 " + b"c" * 99 + b"\r\n\r\n", {"maxLineLength": 50}, None),
            (b"LHTTP/1.0 two words\r\n\r\n", {}, None),
            (b"LHTTP/1.0 \xff\r\n\r\n", {}, None),
            (b"HTTP/1.1 chat\r\n\r\n", {}, None),
            (b"LHTTP/1.0 chat", {}, None),
        ]
        for data, limits, command in cases:
            error = self.assertRaises(MalformedMessage, parse, data, **limits)
            self.assertEqual(error.command, command, data)


class MultipartTests(SynchronousTestCase):
    body = b"k1:v1\r\n\r\nbody1k2:v2\r\n\r\nbody2"

    def assertBad(self, offsets, words, body=None):
        error = self.assertRaises(BadMultipart, parseMultipart, self.body if body is None else body, offsets)
        self.assertEqual(error.status, 400)
        self.assertIn(words, str(error))

    def test_notIntegers(self):
        self.assertBad("0 x", "not a non-negative integer")
        self.assertBad("0 1.5", "not a non-negative integer")
        self.assertBad("-1 3", "not a non-negative integer")

    def test_notAscending(self):
        self.assertBad("14 0", "ascending")
        self.assertBad("0 0", "ascending")

    def test_outsideBody(self):
        self.assertBad("0 400", "outside")

    def test_empty(self):
        self.assertBad("", "no offsets")

    def test_partWithoutBlankLine(self):
        self.assertBad("0", "no blank line", body=b"k1:v1\r\nbody")

    def test_partWithoutHeaders(self):
        self.assertEqual(parseMultipart(b"\r\nbare", "0"), [Part([], b"bare")])

    def test_partHeaderLimits(self):
        body = b"".join(b"h%d:v\r\n" % i for i in range(5)) + b"\r\nbody"
        self.assertEqual(len(parseMultipart(body, "0", 5, 10)[0].headers), 5)
        error = self.assertRaises(BadMultipart, parseMultipart, body, "0", 4)
        self.assertEqual(error.reason, "too many headers")
        long = b"h:" + b"v" * 20 + b"\r\n\r\nbody"
        error = self.assertRaises(BadMultipart, parseMultipart, long, "0", None, 10)
        self.assertEqual(error.reason, "header too long")

    def test_offsetsSplitOnASCIISpaceOnly(self):
        self.assertEqual(len(parseMultipart(self.body, "0\t14")), 2)
        self.assertBad("0\u00a014", "not a non-negative integer")


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"), min_size=1, max_size=12)
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=20).map(lambda v: v.strip(" \t"))
commands = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
messages = st.builds(Message, commands, st.lists(st.tuples(names, values), max_size=6), st.binary(max_size=64))
parts = st.builds(Part, st.lists(st.tuples(names, values), max_size=3), st.binary(max_size=32))


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=500)
    @given(messages)
    def test_roundTrip(self, message):
        data = serialize(message)
        self.assertEqual(parse(data), message)
        self.assertEqual(serialize(parse(data)), data)

    @settings(max_examples=300)
    @given(st.lists(parts, min_size=1, max_size=5))
    def test_multipartRoundTrip(self, partList):
        offsets, body = serializeMultipart(partList)
        self.assertEqual(parseMultipart(body, offsets), partList)

    @settings(max_examples=1000)
    @given(st.one_of(st.binary(max_size=200), messages.map(serialize).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda i: b[:i] + b"\r" + b[i:]))))
    def test_neverCrash(self, data):
        try:
            parse(data)
        except LHTTPError as error:
            self.assertEqual(error.status, 400)

    @settings(max_examples=1000)
    @given(st.binary(max_size=100), st.text(max_size=30))
    def test_multipartNeverCrash(self, body, offsets):
        try:
            parseMultipart(body, offsets)
        except LHTTPError as error:
            self.assertEqual(error.status, 400)
