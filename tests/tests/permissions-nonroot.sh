#
# Permission checks for a non-root user (uid 22222, gid 44444): creating
# in directories by mode, the sticky bit, chmod/chown of others' files,
# reading and writing by mode and group, search permission and setgid
# directories.
#

t_require_commands setpriv touch mkdir chmod chown cat rm mv stat

umask 022
cd "$T_D0"
chmod 0755 "$T_D0"

as_user() {
	setpriv --reuid=22222 --regid=44444 --clear-groups "$@"
}

echo "== setup as root"
mkdir rootdir open sticky private setgid
chmod 0755 rootdir
chmod 0777 open
chmod 1777 sticky
chmod 0700 private
chmod 2777 setgid
chgrp 44444 setgid
echo secret > secret
chmod 0600 secret
echo public > public
chmod 0644 public
echo group > group
chgrp 44444 group
chmod 0640 group
echo root > open/rootfile
chmod 0666 open/rootfile
echo root > sticky/rootfile
chmod 0666 sticky/rootfile
echo hidden > private/file
stat -c '%n %a %u %g' rootdir open sticky private setgid secret public group

echo "== creating in a root-owned 0755 directory"
as_user touch rootdir/file
as_user mkdir rootdir/dir
as_user ln -s x rootdir/link
ls -A rootdir | wc -l

echo "== creating in a 0777 directory"
as_user touch open/userfile
as_user mkdir open/userdir
stat -c '%n %a %u %g' open/userfile open/userdir

echo "== a user can chmod its own file, not another's"
as_user chmod 0600 open/userfile
stat -c '%n %a' open/userfile
as_user chmod 0600 open/rootfile
stat -c '%n %a' open/rootfile

echo "== a user can't give a file away"
as_user chown 0 open/userfile
as_user chgrp 0 open/userfile
stat -c '%n %u %g' open/userfile

echo "== a user can remove another's file from a 0777 directory"
echo root > open/rootfile2
as_user rm -f open/rootfile2
test -e open/rootfile2 || echo "open/rootfile2 removed"

echo "== the sticky bit protects other users' entries"
as_user touch sticky/userfile
as_user rm -f sticky/rootfile
as_user mv sticky/rootfile sticky/renamed
as_user rm sticky/userfile
ls sticky
as_user touch sticky/userfile2
rm sticky/userfile2
ls sticky

echo "== reading by mode"
as_user cat secret
as_user cat public
as_user cat group
as_user sh -c 'echo x >> public'
as_user sh -c 'echo x >> group'

echo "== a 0700 directory can't be listed or searched"
as_user ls private
as_user cat private/file
as_user stat -c '%n' private/file

echo "== setgid directories pass their group on"
as_user touch setgid/userfile
touch setgid/rootfile
mkdir setgid/subdir
stat -c '%n %u %g %a' setgid/userfile setgid/rootfile setgid/subdir

echo "== a user can't set setgid for a group it's not in"
as_user touch open/sgid
as_user chmod 2755 open/sgid
stat -c '%n %a' open/sgid
chgrp 0 open/sgid
as_user chmod 2755 open/sgid
stat -c '%n %a' open/sgid

echo "== writing as another user clears setuid"
touch open/suid
chmod 4777 open/suid
as_user sh -c 'echo x >> open/suid'
stat -c '%n %a' open/suid

echo "== cleanup"
rm -rf rootdir open sticky private setgid secret public group
ls -A | wc -l

t_pass
