#
# Create an inode of every type and check what stat reports for each:
# file type, mode bits, device major/minor, size and link count.
#

t_require_commands touch mkfifo mknod python3 ln mkdir stat find rm

umask 022
cd "$T_D0"

echo "== create one of every type"
touch file
mkfifo fifo
mkfifo -m 0600 fifo-0600
mknod chr c 1 3
mknod blk b 7 200
mknod chr-big c 250 65537
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
ln -s file link
mkdir dir

echo "== stat each"
for n in file fifo fifo-0600 chr blk chr-big sock link dir; do
	stat -c '%n %F %a %t %T %s %h' "$n"
done

echo "== find types"
find . -mindepth 1 -printf '%f %y\n' | sort

echo "== ls types"
ls -l | awk 'NR > 1 { print substr($1, 1, 1), $NF }' | sort -k 2

echo "== test operators"
test -f file && echo "file is regular"
test -p fifo && echo "fifo is a fifo"
test -c chr && echo "chr is a char device"
test -b blk && echo "blk is a block device"
test -S sock && echo "sock is a socket"
test -L link && echo "link is a symlink"
test -f link && echo "link resolves to a regular file"
test -d dir && echo "dir is a directory"

echo "== types survive dropping the dentry cache"
echo 2 > /proc/sys/vm/drop_caches
for n in file fifo chr blk chr-big sock link dir; do
	stat -c '%n %F %t %T' "$T_D0/$n" | t_filter_fs
done

echo "== remove every type"
rm file fifo fifo-0600 chr blk chr-big sock link
rmdir dir
ls -A | wc -l

t_pass
