#!/usr/bin/env python3
"""Counts the packets holding MARKER in every pcap/pcapng file under DIR.

    pcapcount.py DIR MARKER

Prints one number. Files being written may end in a partial record: it is not
counted. Used by packaging/lifecycle.sh to see the frames a sensor received.
"""
import os
import struct
import sys


def pcap_records(data):
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        return
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8 : off + 12])[0]
        if off + 16 + incl > len(data):
            return
        yield data[off + 16 : off + 16 + incl]
        off += 16 + incl


def pcapng_records(data):
    end = "<"
    off = 0
    while off + 12 <= len(data):
        btype = struct.unpack(end + "I", data[off : off + 4])[0]
        if btype == 0x0A0D0D0A:  # section header: byte order from its magic
            end = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        blen = struct.unpack(end + "I", data[off + 4 : off + 8])[0]
        if blen < 12 or off + blen > len(data):
            return
        if btype in (6, 3):  # enhanced / simple packet block
            yield data[off + 8 : off + blen - 4]
        off += blen


def main():
    top, marker = sys.argv[1], sys.argv[2].encode()
    count = 0
    for dirpath, _, files in os.walk(top):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if data[:4] == b"\x0a\x0d\x0d\x0a":
                records = pcapng_records(data)
            else:
                records = pcap_records(data)
            count += sum(1 for r in records if marker in r)
    print(count)


if __name__ == "__main__":
    main()
