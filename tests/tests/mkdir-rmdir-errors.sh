#
# Error messages from creating and removing files and directories
# with the wrong types or states.
#

t_require_commands mkdir rmdir rm unlink touch ln mknod

umask 022
cd "$T_D0"

mkdir dir full
touch file full/file

echo "== mkdir of existing names"
mkdir dir
mkdir file
mkdir -p file

echo "== create through a missing directory or a file"
touch nodir/file
mkdir nodir/dir
touch file/sub
mkdir file/sub

echo "== create over an existing directory"
touch dir && echo "touch of a directory works"
mkfifo dir
mknod dir c 1 3
ln -sT x dir
ln -T file dir

echo "== rmdir errors"
rmdir full
rmdir file
rmdir nope
rmdir .
rmdir dir/.
rmdir dir/..

echo "== unlink errors"
unlink dir
rm dir
rm nope
unlink nope

echo "== trailing slashes"
touch file/
rm file/
rmdir dir/ && echo "rmdir dir/ works"
mkdir dir/ && echo "mkdir dir/ works"

echo "== everything still there"
find . | sort

echo "== cleanup"
rm -rf dir full file
ls -A | wc -l

t_pass
