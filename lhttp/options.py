"""
C{twistd lhttp}'s command line, made from L{lhttp.config.Config}: every
field is a flag with the field's help, and L{Options.config} is the
L{Config} the flags describe.
"""

import os
import sys

from twisted.python import usage

from lhttp.config import Config, options, showDefault
from lhttp.plugin import addWorkingDirectory, loadFilter, loadProcessor
from lhttp.service import checkEndpoint
from lhttp.version import __version__


def _name(field):
    return field.metadata["flag"][2:]


def _helpText(field):
    meta = field.metadata
    text = meta["help"]
    if meta["kind"] is not bool and "Default:" not in text:
        text += f" Default: {showDefault(field)}."
    if meta["env"]:
        text += f" Read from ${meta['env']} when not given."
    return text


class Options(usage.Options):
    """
    C{twistd lhttp [options]}; see L{lhttp.config.Config} for each.

    @ivar config: the L{Config}, once the options are parsed.
    """

    synopsis = "[options]"
    longdesc = (
        "Run an LHTTP server: WebSocket clients connect to any path "
        "(ws://host:8081/ or ws://host:8081/chat) and send LHTTP messages; "
        "the subscribe/publish/unsubscribe headers give pub/sub over channels; "
        "backends publish with POST /publish. Processors for commands are "
        "found as Twisted plugins (installed, or in ./twisted/plugins) or "
        "named with --processor. Without --listen or --port it listens on "
        "127.0.0.1:8081."
    )
    optFlags = []
    optParameters = []
    config = None
    # Loaded while the options are read: (command, processor), filters.
    processors = ()
    filters = ()

    def __init__(self):
        usage.Options.__init__(self)
        for field in options():
            if field.metadata["repeat"]:
                self[_name(field)] = []

    def parseOptions(self, options=None):
        """
        Read the options; under C{twistd}, a mistake is one line naming the
        option and the fix, and a pointer to C{--help}, instead of twistd's
        whole usage text followed by the error.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            # Set by twistd (usage.Options) on a subcommand's options.
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit(f"twistd lhttp: {e}\nRun 'twistd lhttp --help' for every option.") from None

    def opt_version(self):
        """Print lhttp's version and exit."""
        sys.stdout.write(f"lhttp {__version__}\n")
        sys.exit(0)

    def postOptions(self):
        values = {}
        for field in options():
            meta = field.metadata
            value = self[_name(field)]
            if meta["repeat"]:
                if not value and meta["env"]:
                    value = _readAll(meta["repeat"], os.environ.get(meta["env"], ""))
                if value:
                    values[field.name] = tuple(value)
            elif meta["kind"] is bool:
                if value:
                    # A flag sets the opposite of the default (--no-plugins).
                    values[field.name] = not field.default
            else:
                if value is None and meta["env"]:
                    value = os.environ.get(meta["env"]) or None
                if value is not None:
                    values[field.name] = value
        try:
            self.config = Config(**values)
        except (ValueError, TypeError) as e:
            raise usage.UsageError(str(e)) from None
        self._checkEarly(self.config)

    def _checkEarly(self, config):
        """
        What would otherwise fail only at startup, with a traceback: bad
        endpoints, processors and filters that cannot be loaded.
        """
        endpoints = [("--listen", description) for description in config.endpoints()]
        if config.metricsListen:
            endpoints.append(("--metrics-listen", config.metricsListen))
        if config.adminListen:
            endpoints.append(("--admin-listen", config.adminListen))
        for flag, description in endpoints:
            try:
                checkEndpoint(description)
            except ValueError as e:
                raise usage.UsageError(f"{flag} {e}") from None
        # Processors and plugins are looked for in the current directory
        # too, as the README's "run it from your project's folder" says.
        addWorkingDirectory()
        self.processors = [
            (command, _loaded(loadProcessor, name, f"--processor {command}={name}"))
            for command, name in config.processors
        ]
        self.filters = [_loaded(loadFilter, name, f"--filter {name}") for name in config.filters]
        if config.nats:
            useAsyncioReactor()


def _readAll(read, text):
    items = []
    for value in [text] if text else []:
        item = read(value)
        items.extend(item if isinstance(item, list) else [item])
    return items


def _loaded(load, name, flag):
    """
    Load a processor or filter now, so a typo is one line, not a traceback.
    """
    try:
        return load(name)
    except Exception as e:
        raise usage.UsageError(f"{flag}: cannot load it: {type(e).__name__}: {e}") from None


def _parameter(field):
    meta = field.metadata
    kind = meta["kind"]

    def coerce(text):
        try:
            return kind(text)
        except ValueError as e:
            if kind in (int, float, str):
                raise ValueError(f"{meta['flag']} wants {'a number' if kind is not str else 'a value'}, "
                                 f"not {text!r}") from None
            # A reader of its own (a file's contents): its reason.
            raise ValueError(str(e)) from None

    coerce.coerceDoc = ""
    return [_name(field), meta["short"], None, _helpText(field), coerce]


def _repeatable(field):
    meta = field.metadata
    name = _name(field)
    read = meta["repeat"]

    def option(self, value):
        try:
            item = read(value)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self[name].extend(item if isinstance(item, list) else [item])

    option.__doc__ = _helpText(field)
    return option


def _build():
    for field in options():
        meta = field.metadata
        if meta["repeat"]:
            option = _repeatable(field)
            setattr(Options, "opt_" + _name(field).replace("-", "_"), option)
            if meta["short"]:
                setattr(Options, "opt_" + meta["short"], option)
        elif meta["kind"] is bool:
            Options.optFlags.append([_name(field), meta["short"], _helpText(field)])
        else:
            Options.optParameters.append(_parameter(field))


_build()


def useAsyncioReactor():
    """
    nats-py runs on asyncio: install Twisted's asyncio reactor, unless a
    reactor is installed already, in which case it must be that one.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        return
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise usage.UsageError(
            "--nats needs the asyncio reactor; leave out --reactor, or run "
            "'twistd --reactor=asyncio lhttp --nats ...'"
        )


if __name__ == "__main__":
    # python -m lhttp.options: the option table docs/options.rst carries.
    from lhttp.config import optionTable

    sys.stdout.write(optionTable())
