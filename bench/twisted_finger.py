"""The Twisted finger tutorial's "Use Deferreds" step (finger11.py), as the baseline peer.

From Twisted's docs/core/howto/tutorial/listings/finger/finger11.py, unchanged but for the port
and the interface, which the benchmark passes: ``python twisted_finger.py PORT``. It answers
"moshez" with "Happy and well" and anyone else with "No such user"; it logs nothing.
"""

import sys

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.protocols import basic


class FingerProtocol(basic.LineReceiver):
    def lineReceived(self, user):
        d = self.factory.getUser(user)

        def onError(err):
            return b"Internal error in server"

        d.addErrback(onError)

        def writeResponse(message):
            self.transport.write(message + b"\r\n")
            self.transport.loseConnection()

        d.addCallback(writeResponse)


class FingerFactory(protocol.ServerFactory):
    protocol = FingerProtocol

    def __init__(self, users):
        self.users = users

    def getUser(self, user):
        return defer.succeed(self.users.get(user, b"No such user"))


fingerEndpoint = endpoints.serverFromString(
    reactor, f"tcp:{int(sys.argv[1])}:interface=127.0.0.1:backlog=1024")
fingerEndpoint.listen(FingerFactory({b"moshez": b"Happy and well"}))
reactor.run()
