#!/usr/bin/env python3
"""Makes rpmdb.sqlite beside this script: an rpm sqlite database in the
layout rpm >= 4.16 writes (table Packages(hnum, blob), one header blob per
package), for the rpm reader's unit tests (src/sbom/rpm.rs).

The packages: glibc (files under /lib64, a usrmerge path, and /usr/lib64),
zlib (an epoch, an SPDX license), bigpkg (enough files that its header
spills onto sqlite overflow pages), and 40 small filler packages (so the
table needs an interior b-tree page). Run it again to remake the file:
the bytes depend only on this script.
"""
import os
import sqlite3
import struct

NAME, VERSION, RELEASE, EPOCH, VENDOR, LICENSE, ARCH = 1000, 1001, 1002, 1003, 1011, 1014, 1022
DIRINDEXES, BASENAMES, DIRNAMES = 1116, 1117, 1118
INT32, STRING, STRING_ARRAY = 4, 6, 8


def header(tags):
    """An rpm header blob as rpmdb stores it: il, dl, index, data."""
    index, data = b"", b""
    for tag, (typ, value) in sorted(tags.items()):
        if typ == INT32:
            while len(data) % 4:
                data += b"\0"
            off, count = len(data), len(value)
            data += b"".join(struct.pack(">I", v) for v in value)
        elif typ == STRING:
            off, count = len(data), 1
            data += value.encode() + b"\0"
        else:
            off, count = len(data), len(value)
            data += b"".join(v.encode() + b"\0" for v in value)
        index += struct.pack(">iIiI", tag, typ, off, count)
    return struct.pack(">II", len(tags), len(data)) + index + data


def package(name, version, release, arch, files, epoch=None, license=None, vendor=None):
    dirs = sorted({os.path.dirname(f) + "/" for f in files})
    tags = {
        NAME: (STRING, name),
        VERSION: (STRING, version),
        RELEASE: (STRING, release),
        ARCH: (STRING, arch),
    }
    if epoch is not None:
        tags[EPOCH] = (INT32, [epoch])
    if license:
        tags[LICENSE] = (STRING, license)
    if vendor:
        tags[VENDOR] = (STRING, vendor)
    if files:
        tags[DIRNAMES] = (STRING_ARRAY, dirs)
        tags[BASENAMES] = (STRING_ARRAY, [os.path.basename(f) for f in files])
        tags[DIRINDEXES] = (INT32, [dirs.index(os.path.dirname(f) + "/") for f in files])
    return header(tags)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rpmdb.sqlite")
    if os.path.exists(out):
        os.remove(out)
    db = sqlite3.connect(out)
    db.execute("PRAGMA page_size = 4096")
    db.execute(
        "CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL)"
    )
    pkgs = [
        package(
            "glibc", "2.39", "17.fc40", "x86_64",
            ["/lib64/libc.so.6", "/usr/lib64/libm.so.6", "/usr/lib64"],
            license="LGPL-2.1-or-later AND GPL-2.0-or-later", vendor="Fedora Project",
        ),
        package(
            "zlib-ng-compat", "2.1.7", "2.fc40", "x86_64",
            ["/usr/lib64/libz.so.1", "/usr/lib64/libz.so.1.3.1.zlib-ng"],
            epoch=1, license="Zlib", vendor="Fedora Project",
        ),
        package(
            "bigpkg", "1.0", "1", "noarch",
            ["/usr/share/bigpkg/file-%04d.txt" % i for i in range(600)],
            license="GPLv2+ and BSD",
        ),
    ]
    pkgs += [package("filler%02d" % i, "1", "1", "noarch", ["/usr/share/filler/%02d" % i]) for i in range(40)]
    for blob in pkgs:
        db.execute("INSERT INTO Packages (blob) VALUES (?)", (blob,))
    db.commit()
    db.execute("VACUUM")
    db.close()


main()
