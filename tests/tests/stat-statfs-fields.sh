#
# The output of scoutfs stat and statfs: field names and order, -s
# single fields, the values we can predict, and errors.  Seqs, ids and
# times are masked.
#
umask 022

t_require_commands scoutfs mkdir mknod

FILE="$T_D0/file"

mask()
{
	sed -e 's/^\(meta_seq  *\)[0-9]*$/\1<seq>/' \
	    -e 's/^\(data_seq  *\)[1-9][0-9]*$/\1<seq>/' \
	    -e 's/^\(crtime  *\)[0-9]*\.[0-9]\{9\}$/\1<secs>.<nsecs>/' \
	    -e 's/^\(fsid  *\)[0-9a-f]\{16\}$/\1<fsid>/' \
	    -e 's/^\(rid  *\)[0-9a-f]\{16\}$/\1<rid>/' \
	    -e 's/^\(committed_seq  *\)[0-9]*$/\1<seq>/' \
	    -e 's/^\(total_[a-z]*_blocks  *\)[0-9]*$/\1<blocks>/'
}

echo "== stat of a new empty file"
touch "$FILE"
scoutfs stat "$FILE" | mask

echo "== stat of a written file"
dd if=/dev/zero of="$FILE" bs=4096 count=3 status=none
scoutfs stat "$FILE" | mask

echo "== single fields"
for f in data_version online_blocks offline_blocks; do
	echo "$f: $(scoutfs stat -s $f "$FILE")"
done
for f in meta_seq data_seq; do
	scoutfs stat -s $f "$FILE" | grep -q '^[1-9][0-9]*$' && echo "$f: a number"
done
scoutfs stat -s crtime "$FILE" | grep -q '^[0-9]*\.[0-9]\{9\}$' && echo "crtime: secs.nsecs"
scoutfs stat --single-field data_version "$FILE"

echo "== stat through a symlink sees the target"
ln -s file "$T_D0/symlink"
scoutfs stat -s data_version "$T_D0/symlink"
scoutfs stat -s online_blocks "$T_D0/symlink"

echo "== stat of a directory"
mkdir "$T_D0/dir"
scoutfs stat "$T_D0/dir" | mask

echo "== stat of a device node and of /dev/null: ioctl fails, status 0"
mknod "$T_D0/null" c 1 3
scoutfs stat "$T_D0/null" 2>&1
echo "rc: $?"
scoutfs stat /dev/null 2>&1
echo "rc: $?"

echo "== stat errors"
scoutfs stat -s bogus "$FILE" 2>&1
echo "rc: $?"
scoutfs stat "$T_D0/missing" 2>&1 | t_filter_fs
echo "rc: ${PIPESTATUS[0]}"
scoutfs stat 2>&1
echo "rc: $?"

echo "== statfs fields"
scoutfs statfs -p "$T_M0" | mask
scoutfs statfs -p "$T_D0/dir" | mask

echo "== statfs single fields"
fsid=$(scoutfs statfs -s fsid -p "$T_M0")
rid=$(scoutfs statfs -s rid -p "$T_M0")
echo "$fsid" | grep -q '^[0-9a-f]\{16\}$' && echo "fsid: 16 hex digits"
echo "$rid" | grep -q '^[0-9a-f]\{16\}$' && echo "rid: 16 hex digits"
[ "$(scoutfs statfs -s fsid -p "$FILE")" == "$fsid" ] && echo "fsid same from a file"
[ "$(scoutfs statfs -s rid -p "$T_D0/dir")" == "$rid" ] && echo "rid same from a dir"
[ "$(t_ident 0)" == "f.${fsid:0:6}.r.${rid:0:6}" ] && echo "ident from fsid and rid"

echo "== statfs totals match df"
meta=$(scoutfs df -p "$T_M0" | awk '($1 == "MetaData") { print $3 }')
data=$(scoutfs df -p "$T_M0" | awk '($1 == "Data") { print $3 }')
[ "$(scoutfs statfs -s total_meta_blocks -p "$T_M0")" == "$meta" ] && echo "total_meta_blocks matches df"
[ "$(scoutfs statfs -s total_data_blocks -p "$T_M0")" == "$data" ] && echo "total_data_blocks matches df"

echo "== committed_seq advances with commits"
seq=$(scoutfs statfs -s committed_seq -p "$T_M0")
touch "$T_D0/another"
sync
[ "$(scoutfs statfs -s committed_seq -p "$T_M0")" -gt "$seq" ] && echo "committed_seq increased"

echo "== statfs errors"
scoutfs statfs -s bogus -p "$T_M0" 2>&1
echo "rc: $?"
scoutfs statfs -p "$T_D0/missing" 2>&1 | t_filter_fs
echo "rc: ${PIPESTATUS[0]}"

t_pass
