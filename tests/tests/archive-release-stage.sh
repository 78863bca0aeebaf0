#
# release, stage, setattr and punch-offline on one mount: their rules,
# errnos and messages (spec semantics §5.2, §5.3, §5.7, §5.9 and
# cli-and-harness §4.2).  Releasing and staging never change the file's
# stat output, data_version or data_seq; they move blocks between the
# online and offline counts.  st_blocks counts online and offline blocks.
#

t_require_commands scoutfs dd cmp stat touch head tail mkdir setpriv

FILE="$T_D0/file"
ARC="$T_TMP.archive"

field()
{
	scoutfs stat -s "$1" "$2"
}

counts()
{
	echo "online $(field online_blocks "$1") offline $(field offline_blocks "$1") st_blocks $(stat -c %b "$1")"
}

# release/stage/... printing what they print on both streams, and the status
run()
{
	"$@" 2>&1 | t_filter_fs
	echo "rc ${PIPESTATUS[0]}"
}

echo "== a file of three blocks and a partial one"
dd if=/dev/urandom of="$ARC" bs=1000 count=13 status=none
cp "$ARC" "$FILE"
sync
counts "$FILE"
V=$(field data_version "$FILE")
DS=$(field data_seq "$FILE")
STAT=$(stat -c '%s %Y.%y %Z.%z' "$FILE")

echo "== release the whole file"
run scoutfs release "$FILE" -V "$V"
counts "$FILE"
t_compare data_version "$V" "$(field data_version "$FILE")"
t_compare data_seq "$DS" "$(field data_seq "$FILE")"
[ "$STAT" = "$(stat -c '%s %Y.%y %Z.%z' "$FILE")" ] && echo "stat unchanged"

echo "== releasing offline blocks and ranges past EOF is fine"
run scoutfs release "$FILE" -V "$V" -o 4K -l 1G
counts "$FILE"

echo "== release errors"
run scoutfs release "$FILE" -V "$((V + 1))"
run scoutfs release "$FILE" -V "$V" -o 1 -l 4096
run scoutfs release "$FILE" -V "$V" -o 0 -l 100
run scoutfs release "$FILE" -V "$V" -o 0xfffffffffffff000 -l 8192
run scoutfs release "$FILE" -V "$V" -o 0 -l 5Q
run scoutfs release "$FILE" -V 0
run scoutfs release "$FILE"
run scoutfs release -V "$V"
run scoutfs release "$FILE" "$FILE" -V "$V"
mkdir "$T_D0/dir"
run scoutfs release "$T_D0/dir" -V 1
echo "== release needs the file opened for writing"
chmod 644 "$FILE"
run setpriv --reuid=22222 --regid=44444 --clear-groups scoutfs release "$FILE" -V "$V"

echo "== stage errors"
run scoutfs stage "$ARC" "$FILE" -V "$((V + 1))"
run scoutfs stage "$ARC" "$FILE" -V "$V" -o 1
head -c 100 "$ARC" > "$T_TMP.short"
run scoutfs stage "$T_TMP.short" "$FILE" -V "$V"
head -c 4096 "$ARC" > "$T_TMP.block0"
run scoutfs stage "$T_TMP.block0" "$FILE" -V "$V" -o 16384
run scoutfs stage "$T_TMP.block0" "$FILE" -V "$V" -l 8192
run scoutfs stage "$T_D0/nothing" "$FILE" -V "$V"
run scoutfs stage "$ARC" "$FILE"
run scoutfs stage "$ARC" -V "$V"
run scoutfs stage -V "$V"
run scoutfs stage "$ARC" "$FILE" "$FILE" -V "$V"
counts "$FILE"

echo "== stage the first block, then the rest"
run scoutfs stage "$T_TMP.block0" "$FILE" -V "$V"
counts "$FILE"
tail -c +4097 "$ARC" > "$T_TMP.rest"
run scoutfs stage "$T_TMP.rest" "$FILE" -V "$V" -o 4096
counts "$FILE"
cmp "$ARC" "$FILE" && echo "contents match"
t_compare data_version "$V" "$(field data_version "$FILE")"
t_compare data_seq "$DS" "$(field data_seq "$FILE")"
[ "$STAT" = "$(stat -c '%s %Y.%y %Z.%z' "$FILE")" ] && echo "stat unchanged"

echo "== staging online blocks again succeeds"
run scoutfs stage "$ARC" "$FILE" -V "$V"
echo "== an empty archive stages nothing"
run scoutfs stage /dev/zero "$FILE" -V "$V" -l 0
cmp "$ARC" "$FILE" && echo "contents match"

echo "== partial release leaves a hole of offline blocks in the middle"
run scoutfs release "$FILE" -V "$V" -o 4K -l 8K
counts "$FILE"
dd if="$FILE" bs=4096 count=1 status=none | cmp - "$T_TMP.block0" && echo "block 0 reads"
dd if="$ARC" bs=4096 skip=1 count=2 status=none > "$T_TMP.mid"
run scoutfs stage "$T_TMP.mid" "$FILE" -V "$V" -o 4K
cmp "$ARC" "$FILE" && echo "contents match"

echo "== setattr makes an offline file of the archive's size"
touch "$T_D0/new"
run scoutfs setattr "$T_D0/new" -V 5 -s 13000 -o -t 1234.5 -r 6789.10
stat -c 'size %s ctime %Z' "$T_D0/new"
echo "data_version $(field data_version "$T_D0/new") crtime $(field crtime "$T_D0/new")"
counts "$T_D0/new"
run scoutfs stage "$ARC" "$T_D0/new" -V 5
counts "$T_D0/new"
cmp "$ARC" "$T_D0/new" && echo "contents match"

echo "== setattr errors"
touch "$T_D0/new2"
run scoutfs setattr "$T_D0/new2" -V 0
run scoutfs setattr "$T_D0/new2" -s 100
run scoutfs setattr "$T_D0/new2" -V 2 -o
run scoutfs setattr -V 2
run scoutfs setattr "$FILE" -V 2 -s 100
run scoutfs setattr "$T_D0/dir" -V 2 -s 100
run setpriv --reuid=22222 --regid=44444 --clear-groups scoutfs setattr "$T_D0/new2" -V 2
chmod 666 "$T_D0/new2"
run setpriv --reuid=22222 --regid=44444 --clear-groups scoutfs setattr "$T_D0/new2" -V 2

echo "== punch-offline"
touch "$T_D0/punch"
scoutfs setattr "$T_D0/punch" -V 1 -s 16K -o
counts "$T_D0/punch"
run scoutfs punch-offline "$T_D0/punch" -o 4K -l 8K -V 1
counts "$T_D0/punch"
run scoutfs punch-offline "$T_D0/punch" -o 0 -l 0 -V 7
run scoutfs punch-offline "$T_D0/punch" -o 1 -l 4K -V 1
run scoutfs punch-offline "$T_D0/punch" -o 0 -l 4K -V 2
run scoutfs punch-offline "$FILE" -o 0 -l 4K -V "$V"
run scoutfs punch-offline "$T_D0/punch" -l 4K -V 1
run scoutfs punch-offline "$T_D0/punch" -o 0 -V 1
run scoutfs punch-offline "$T_D0/punch" -o 0 -l 4K
run scoutfs punch-offline -o 0 -l 4K -V 1
run scoutfs punch-offline "$T_D0/dir" -o 0 -l 4K -V 1
run scoutfs punch-offline "$T_D0/punch" -o 0 -l 16K -V 1
counts "$T_D0/punch"
stat -c 'size %s' "$T_D0/punch"

t_pass
