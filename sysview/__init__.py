"""scoutfs-sysfsd: the FUSE program that serves the sysfs/debugfs view of every live mount.

scoutfs publishes ``/sys/fs/scoutfs/<ident>/...`` and ``/sys/kernel/debug/scoutfs/<ident>/...``
(ident ``f.<fsid6>.r.<rid6>``).  A FUSE daemon cannot create sysfs files, so this program
mounts a small FUSE filesystem at ``$SCOUTFS_SYSFS_ROOT`` (default ``/run/scoutfs/sys``) with
the same relative paths, finds live mounts by their control sockets in
``$SCOUTFS_RUN_DIR/ctl/*.sock`` and forwards every list, read and write to the owning mount
daemon (fs/sysfs.py builds the trees there).

Modules: `backend` (discovery and control-socket calls, no FUSE), `ops` (the `fs.fuse`
Operations), `main` (command line and lifecycle).  The FUSE protocol is the project's own
`fs.fuse` package, as for the mount daemon (fs/vfs.py).
"""
