#!/usr/bin/env python3
"""A QMP session with nothing but Python's standard library, as a script or a tool would speak to jvhost.

usage: qmp_session.py QMP_SOCKET EXPORT_SOCKET
Prints one line per step: '<tag> <json>'. Exits 0 when the session ran to its end (the daemon quit).
"""
import json
import socket
import struct
import sys

qmp_path, export_path = sys.argv[1], sys.argv[2]
events = []

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(qmp_path)
f = s.makefile('rb')


def recv():
    line = f.readline()
    if not line:
        raise SystemExit('unexpected EOF from jvhost')
    if not line.endswith(b'\r\n'):
        raise SystemExit('line does not end in CR LF: %r' % line)
    return json.loads(line)


def cmd(execute, arguments=None, id=None):
    msg = {'execute': execute}
    if arguments is not None:
        msg['arguments'] = arguments
    if id is not None:
        msg['id'] = id
    s.sendall(json.dumps(msg).encode() + b'\n')
    while True:
        r = recv()
        if 'event' in r:
            events.append(r)
            continue
        return r


def out(tag, obj):
    print(tag + ' ' + json.dumps(obj, sort_keys=True), flush=True)


out('greeting', recv())
out('early', cmd('query-version', id=1))
out('caps', cmd('qmp_capabilities'))
out('version', cmd('query-version', id='v'))
out('commands', cmd('query-commands'))
out('blockdev-add', cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'py0', 'size': 1048576, 'read-zeroes': True}))
export = {'type': 'vhost-user-blk', 'id': 'pyexp', 'node-name': 'py0', 'writable': True,
          'addr': {'type': 'unix', 'path': export_path}, 'num-queues': 2}
out('export-add', cmd('block-export-add', export))
out('exports', cmd('query-block-exports'))
out('bad', cmd('block-export-add', dict(export, bogus=1), id=[1, 'two']))

# A vhost-user front-end in miniature: GET_FEATURES (request 1, flags VERSION 0x1, size 0).
fe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
fe.settimeout(30)
fe.connect(export_path)
fe.sendall(struct.pack('<III', 1, 1, 0))
reply = b''
while len(reply) < 20:
    chunk = fe.recv(20 - len(reply))
    if not chunk:
        raise SystemExit('export closed the connection')
    reply += chunk
request, flags, size, features = struct.unpack('<IIIQ', reply)
out('features', {'request': request, 'flags': flags, 'size': size, 'version_1': bool(features & (1 << 32))})

out('export-del', cmd('block-export-del', {'id': 'pyexp', 'mode': 'hard'}))
while not any(e['event'] == 'BLOCK_EXPORT_DELETED' for e in events):
    events.append(recv())
out('event', [e for e in events if e['event'] == 'BLOCK_EXPORT_DELETED'][0])
out('front-end-eof', fe.recv(1) == b'')
out('quit', cmd('quit', id='bye'))
out('eof', f.readline() == b'')
