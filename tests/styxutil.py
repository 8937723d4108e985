"""A raw 9P2000 peer for tests: sends exactly the messages a test writes."""
import gevent
import gevent.socket

from regmgr import ninep
from regmgr.ninep import NOFID, NOTAG


class Raw:
    """One Styx connection driven message by message (no client library)."""

    def __init__(self, port, host="127.0.0.1"):
        self.sock = gevent.socket.create_connection((host, port), timeout=5)
        self.decoder = ninep.Decoder(ninep.IOHDRSZ + 65536)
        self._tag = 0
        self.early = {}  # replies that came before the one being waited for

    def tag(self):
        """A fresh tag, clear of the small ones tests pick by hand."""
        self._tag = (self._tag + 1) % 50000
        return 1000 + self._tag

    def send(self, msg):
        self.sock.sendall(ninep.encode(msg))

    def _next(self):
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.decoder.feed(data)

    def reply_to(self, tag, timeout=5.0):
        """The reply with ``tag``; replies to other tags are kept for later."""
        if tag in self.early:
            return self.early.pop(tag)
        with gevent.Timeout(timeout):
            while True:
                msg = self._next()
                if msg.tag == tag:
                    return msg
                assert msg.tag not in self.early, msg
                self.early[msg.tag] = msg

    def nothing_within(self, seconds):
        """True if no reply at all arrives within ``seconds``."""
        if self.early:
            return False
        try:
            with gevent.Timeout(seconds):
                self.early[-1] = self._next()
        except gevent.Timeout:
            return True
        return False

    def rpc(self, msg):
        self.send(msg)
        return self.reply_to(msg.tag)

    def ok(self, msg, kind):
        reply = self.rpc(msg)
        assert isinstance(reply, kind), reply
        return reply

    def error(self, msg):
        """Send msg and return the text of the Rerror it must draw."""
        reply = self.rpc(msg)
        assert isinstance(reply, ninep.Rerror), reply
        return reply.ename

    # -- common sequences -----------------------------------------------------

    def version(self, msize=8192, version="9P2000"):
        return self.rpc(ninep.Tversion(NOTAG, msize, version))

    def attach(self, fid=0, uname="alice"):
        return self.ok(ninep.Tattach(self.tag(), fid, NOFID, uname, ""), ninep.Rattach)

    def session(self, uname="alice", msize=8192):
        """Version and attach fid 0 as uname; returns self."""
        assert self.version(msize).version == "9P2000"
        self.attach(0, uname)
        return self

    def walk(self, newfid, *names, fid=0):
        return self.rpc(ninep.Twalk(self.tag(), fid, newfid, tuple(names)))

    def open(self, fid, name, mode):
        """Walk fid 0 to name as fid and open it; returns the reply to Topen."""
        self.ok(ninep.Twalk(self.tag(), 0, fid, (name,)), ninep.Rwalk)
        return self.rpc(ninep.Topen(self.tag(), fid, mode))

    def write(self, fid, data, offset=0):
        return self.rpc(ninep.Twrite(self.tag(), fid, offset, data))

    def read(self, fid, offset=0, count=8000):
        return self.rpc(ninep.Tread(self.tag(), fid, offset, count))

    def read_all(self, fid):
        chunks, offset = [], 0
        while True:
            data = self.ok(ninep.Tread(self.tag(), fid, offset, 8000), ninep.Rread).data
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            offset += len(data)

    def clunk(self, fid):
        return self.rpc(ninep.Tclunk(self.tag(), fid))

    def register(self, fid, line):
        """Open new as fid and write line; the registration lives until fid is clunked."""
        assert isinstance(self.open(fid, "new", ninep.OWRITE), ninep.Ropen)
        return self.ok(ninep.Twrite(self.tag(), fid, 0, line), ninep.Rwrite)

    def close(self):
        self.sock.close()
