#!/usr/bin/env python3
"""Splits the resident memory of a running qemu-user process into the emulator's share and the
guest program's (PhantomNet's), page by page, so RSS figures under qemu can be read honestly.

    packaging/qemu-mem.py PID STRACE_LOG GUEST_BINARY_NAME

STRACE_LOG is the `qemu-... -strace -D FILE` log of that process: the guest's own mmap/munmap/
mremap calls, replayed here, tell which anonymous pages the guest mapped (its heap, its thread
stacks, SQLite's -shm); /proc/PID/pagemap tells which pages are resident. Everything else
anonymous is the emulator's: the translated-code buffer (rwx), qemu's malloc heap, its own
thread stacks. File-backed pages are attributed by file (qemu's binary or the guest's).
Needs root (pagemap) and a 64-bit guest on a 64-bit host (guest addresses = host addresses).
"""
import re
import struct
import sys

PAGE = 4096


def guest_mappings(log_path):
    """Address ranges [start, end) the guest had mapped when the log ends."""
    spans = []

    def remove(s, e):
        nonlocal spans
        out = []
        for a, b in spans:
            if b <= s or a >= e:
                out.append((a, b))
                continue
            if a < s:
                out.append((a, s))
            if b > e:
                out.append((e, b))
        spans = out

    def up(n):
        return (n + PAGE - 1) // PAGE * PAGE

    mmap = re.compile(r'\bmmap\((?:0x[0-9a-f]+|NULL),(\d+),.*\) = (0x[0-9a-f]+)$')
    munmap = re.compile(r'\bmunmap\((0x[0-9a-f]+),(\d+)\) = 0$')
    mremap = re.compile(r'\bmremap\((0x[0-9a-f]+),(\d+),(\d+),.*\) = (0x[0-9a-f]+)$')
    with open(log_path, errors='replace') as f:
        for line in f:
            line = line.rstrip()
            m = mmap.search(line)
            if m:
                a = int(m.group(2), 16)
                spans.append((a, a + up(int(m.group(1)))))
                continue
            m = munmap.search(line)
            if m:
                a = int(m.group(1), 16)
                remove(a, a + up(int(m.group(2))))
                continue
            m = mremap.search(line)
            if m:
                a = int(m.group(1), 16)
                remove(a, a + up(int(m.group(2))))
                b = int(m.group(4), 16)
                spans.append((b, b + up(int(m.group(3)))))
    return spans


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    pid, log_path, guest_bin = sys.argv[1], sys.argv[2], sys.argv[3]
    spans = guest_mappings(log_path)
    totals = {}

    def add(key, kib):
        totals[key] = totals.get(key, 0) + kib

    with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/pagemap', 'rb') as pagemap:
        for line in maps:
            f = line.split()
            start, end = (int(x, 16) for x in f[0].split('-'))
            perms, name = f[1], (f[5] if len(f) > 5 else '')
            if name == '[vsyscall]':
                continue
            pagemap.seek(start // PAGE * 8)
            raw = pagemap.read((end - start) // PAGE * 8)
            present = [start + i * PAGE for i, (v,) in enumerate(struct.iter_unpack('<Q', raw))
                       if v >> 63 & 1]
            if not present:
                continue
            kib = len(present) * 4
            if 'qemu' in name:
                add('emulator: qemu executable (file pages)', kib)
            elif guest_bin in name:
                add('guest: its executable (file pages)', kib)
            elif name == '[heap]':
                add("emulator: qemu's malloc heap", kib)
            elif 'x' in perms and not name:
                add('emulator: translated-code buffer', kib)
            elif start < 0x5600000000:
                # Below qemu's guest mmap base: the guest's brk, main stack and first mmaps.
                add('guest: brk, main stack, first mmaps', kib)
            else:
                g = sum(1 for p in present if any(a <= p < b for a, b in spans)) * 4
                if g:
                    add('guest: mmaps (malloc heap, thread stacks, SQLite -shm)', g)
                if kib - g:
                    add('emulator: other anonymous (its mmaps, host thread stacks)', kib - g)
    for who in ('emulator', 'guest'):
        part = {k: v for k, v in totals.items() if k.startswith(who)}
        for k in sorted(part, key=lambda k: -part[k]):
            print(f'{part[k]:8d} KiB  {k}')
        print(f'{sum(part.values()):8d} KiB  {who} total')
    print(f'{sum(totals.values()):8d} KiB  resident now')


if __name__ == '__main__':
    main()
