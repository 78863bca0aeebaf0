#
# Link counts of files and directories through link, unlink, mkdir,
# rmdir and rename.  A directory has 2 links plus one per subdirectory.
#

t_require_commands touch ln rm mkdir rmdir mv stat cat

umask 022
cd "$T_D0"

links() {
	local p
	for p in "$@"; do
		stat -c '%n %h' "$p"
	done
}

echo "== new file has one link"
echo contents > file
links file

echo "== hard links add links"
ln file file2
ln file file3
mkdir other
ln file other/file4
links file file2 file3 other/file4

echo "== all names are the same inode"
i=$(stat -c %i file)
for p in file2 file3 other/file4; do
	test "$(stat -c %i $p)" = "$i" && echo "$p same inode"
done

echo "== unlinking removes links"
rm file2
links file file3 other/file4
rm file
links file3 other/file4
cat file3

echo "== renaming does not change the count"
mv file3 other/file5
links other/file4 other/file5

echo "== unlink the last two"
rm other/file4
links other/file5
rm other/file5
ls -A other | wc -l

echo "== hard link to a directory is refused"
mkdir d
ln d d-link
links d

echo "== subdirectories add links to their parent"
mkdir d/a
links d
mkdir d/b d/c
links d d/a d/b d/c

echo "== files and symlinks in a directory do not"
touch d/file
ln -s file d/symlink
mkfifo d/fifo
links d

echo "== removing subdirectories"
rmdir d/a
links d
rm -f d/file d/symlink d/fifo
links d

echo "== moving a subdirectory between parents"
mkdir e
links d e
mv d/b e/
links d e e/b
mv e/b e/renamed
links e

echo "== renaming a directory over an empty directory"
mkdir e/victim
links e
mv -T d/c e/victim
links d e e/victim

echo "== nested"
mkdir -p n/1/2/3
links n n/1 n/1/2 n/1/2/3
rmdir n/1/2/3
links n/1/2

echo "== cleanup"
rm -rf d e n other
links .

t_pass
