#
# O_TMPFILE: an inode with no name and no links until linkat gives it
# one.  Its mode honours the umask as a create's does, its contents are
# kept when it is linked, other mounts see the linked file, and it
# survives a remount.
#
t_require_commands o_tmpfile_umask o_tmpfile_linkat stat head
t_require_mounts 2

echo "== O_TMPFILE honours the umask"
o_tmpfile_umask "$T_D0" "$T_D0/umask"

echo "== a linked tmpfile keeps what was written"
o_tmpfile_linkat "$T_D0" "$T_D0/linked" 10000
stat -c '%s %h %A' "$T_D0/linked"
head -c 26 "$T_D0/linked"; echo

echo "== another mount sees it"
stat -c '%s %h %A' "$T_D1/linked"
head -c 26 "$T_D1/linked"; echo

echo "== an empty tmpfile linked in a subdirectory"
mkdir "$T_D0/dir"
o_tmpfile_linkat "$T_D0/dir" "$T_D0/dir/empty" 0
stat -c '%s %h' "$T_D0/dir/empty"
ls "$T_D1/dir"

echo "== after remount"
t_umount 0
t_mount 0
stat -c '%s %h %A' "$T_D0/linked" "$T_D0/umask"
head -c 26 "$T_D0/linked"; echo

t_pass
