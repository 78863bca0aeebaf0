#
# POSIX ACLs grant and deny access to other uids: named user entries,
# the mask, default ACLs inherited by new files and dirs, and removal.
#
umask 022

t_require_commands touch setfacl getfacl setpriv cat stat

AS_U2="setpriv --reuid=22222 --regid=44444 --clear-groups"
AS_U3="setpriv --reuid=33333 --regid=44444 --clear-groups"
FILE="$T_D0/file"
DIR="$T_D0/dir"

acl()
{
	getfacl -n --absolute-names "$1" 2>&1 | t_filter_fs
}

try_read()
{
	local who="$1"
	local path="$2"
	local out

	if out=$(eval "\$$who" cat "$path" 2>&1); then
		echo "$who read: $(echo $out | tr ' ' ',')"
	else
		echo "$out" | t_filter_fs
	fi
}

try_write()
{
	local who="$1"
	local path="$2"
	local out

	if out=$(eval "\$$who" bash -c "'echo $who >> \"$path\"'" 2>&1); then
		echo "$who write ok"
	else
		echo "$out" | t_filter_fs | sed -e 's/^.*line [0-9]*: /bash: /'
	fi
}

echo "== root file 0600 denies other uids"
echo root > "$FILE"
chmod 0600 "$FILE"
acl "$FILE"
try_read AS_U2 "$FILE"
try_write AS_U2 "$FILE"

echo "== named user entry grants rw to 22222 only"
setfacl -m u:22222:rw "$FILE"
acl "$FILE"
stat -c '%A' "$FILE"
try_read AS_U2 "$FILE"
try_write AS_U2 "$FILE"
try_read AS_U2 "$FILE"
try_read AS_U3 "$FILE"
try_write AS_U3 "$FILE"

echo "== the mask limits the named entry"
setfacl -m m::r "$FILE"
acl "$FILE"
stat -c '%A' "$FILE"
try_read AS_U2 "$FILE"
try_write AS_U2 "$FILE"

echo "== chmod changes the mask"
chmod 0660 "$FILE"
acl "$FILE"
try_write AS_U2 "$FILE"

echo "== named group entry"
setfacl -m g:44444:r "$FILE"
setfacl -x u:22222 "$FILE"
acl "$FILE"
try_read AS_U3 "$FILE"
try_write AS_U3 "$FILE"

echo "== setfacl -b removes the ACL and restores denial"
setfacl -b "$FILE"
acl "$FILE"
stat -c '%A' "$FILE"
try_read AS_U2 "$FILE"
try_read AS_U3 "$FILE"

echo "== default ACL on a dir is inherited"
mkdir "$DIR"
chmod 0700 "$DIR"
setfacl -m u:22222:rwx "$DIR"
setfacl -d -m u:22222:rw "$DIR"
setfacl -d -m u:33333:r "$DIR"
acl "$DIR"
$AS_U2 touch "$DIR/by22222" 2>&1 | t_filter_fs
$AS_U3 touch "$DIR/by33333" 2>&1 | t_filter_fs
stat -c '%n %u %g %A' "$DIR/by22222" 2>&1 | t_filter_fs
acl "$DIR/by22222"
echo new > "$DIR/new"
acl "$DIR/new"
stat -c '%A' "$DIR/new"
mkdir "$DIR/subdir"
acl "$DIR/subdir"
stat -c '%A' "$DIR/subdir"

echo "== inherited ACL grants access"
try_read AS_U2 "$DIR/new"
try_write AS_U2 "$DIR/new"
setfacl -m u:33333:x "$DIR"
try_read AS_U3 "$DIR/new"
try_write AS_U3 "$DIR/new"

echo "== removing the default ACL stops inheritance"
setfacl -k "$DIR"
touch "$DIR/after"
acl "$DIR/after"

echo "== ACLs survive remount"
t_umount 0
t_mount 0
acl "$DIR"
acl "$DIR/new"
try_read AS_U2 "$DIR/new"
try_read AS_U3 "$FILE"

t_pass
