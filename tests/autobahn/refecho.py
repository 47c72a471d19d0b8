# Autobahn's reference echo servers for tests/autobahn/run.sh (Python 2.7,
# run by the autobahntestsuite venv's python). Owns: one process, one
# Twisted reactor, one listener per argument, all on 127.0.0.1 only.
#
#   refecho.py ws:PORT                  what `wstest -m echoserver -w ws://127.0.0.1:PORT` runs
#   refecho.py wss:PORT:KEY:CERT        the same over TLS (wstest's own wss mode ignores -k/-c)
#   refecho.py ws:PORT@HOSTPORT         plain, but accepting `Host: ...:HOSTPORT`
#   refecho.py deflate:PORT             plain, accepting permessage-deflate (cases 12, 13)
#
# Why not `wstest -m echoserver` itself: it binds every interface and cannot
# do TLS. Why the @HOSTPORT form: Autobahn's server refuses an upgrade whose
# Host port is not the port it listens on (400), and a client that reaches
# it through a TCP tunnel (the relay's forward tunnel) names the tunnel's
# local port; externalPort is Autobahn's own knob for a server behind a
# forwarder. The echo protocol and factory are the suite's (echo.py).
import os
import sys

import autobahntestsuite

sys.path.insert(0, os.path.dirname(autobahntestsuite.__file__))
from twisted.internet import reactor, ssl  # noqa: E402
from autobahn.twisted.websocket import listenWS  # noqa: E402
import echo  # noqa: E402


def listen(spec):
    scheme, rest = spec.split(":", 1)
    if scheme == "ws":
        port, _, host_port = rest.partition("@")
        factory = echo.EchoServerFactory("ws://127.0.0.1:%s" % port)
        if host_port:
            factory.externalPort = int(host_port)
        listenWS(factory, None, interface="127.0.0.1")
    elif scheme == "deflate":
        # wstest's echo server negotiates no extension; this one accepts the
        # client's first permessage-deflate offer as it stands.
        from autobahn.websocket.compress import (
            PerMessageDeflateOffer, PerMessageDeflateOfferAccept)

        def accept(offers):
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(offer)

        factory = echo.EchoServerFactory("ws://127.0.0.1:%s" % rest)
        factory.setProtocolOptions(perMessageCompressionAccept=accept)
        listenWS(factory, None, interface="127.0.0.1")
    elif scheme == "wss":
        port, key, cert = rest.split(":", 2)
        factory = echo.EchoServerFactory("wss://127.0.0.1:%s" % port)
        listenWS(factory, ssl.DefaultOpenSSLContextFactory(key, cert), interface="127.0.0.1")
    else:
        raise SystemExit("refecho.py: unknown listener %r" % spec)


for arg in sys.argv[1:]:
    listen(arg)
# run.sh waits for the ports; this line is for the log.
print("refecho listening: %s" % " ".join(sys.argv[1:]))
sys.stdout.flush()
reactor.run()
