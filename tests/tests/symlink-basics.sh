#
# Symlinks: targets from 1 to the maximum of 4095 bytes, readlink,
# resolving relative targets, dangling links and loops, and a target
# that is too long.
#

t_require_commands ln readlink stat cat head tr wc mkdir

umask 022
cd "$T_D0"

# print a string of length $1 of path-ish chars, deterministic
target() {
	local len=$1
	yes 'abcdefg/' | tr -d '\n' | head -c "$len"
}

echo "== short targets"
echo hello > file
ln -s f one-byte
ln -s file short
stat -c '%n %s %F %a' one-byte short
readlink one-byte short
cat short

echo "== 100 byte target"
t100=$(target 100)
ln -s "$t100" len-100
stat -c '%n %s %F' len-100
test "$(readlink len-100)" = "$t100" && echo "len-100 target matches"
readlink len-100 | tr -d '\n' | wc -c

echo "== 4095 byte target, the maximum"
t4095=$(target 4095)
ln -s "$t4095" len-4095
stat -c '%n %s %F' len-4095
test "$(readlink len-4095)" = "$t4095" && echo "len-4095 target matches"
readlink len-4095 | tr -d '\n' | wc -c

echo "== 4096 byte target is too long"
t4096=$(target 4096)
ln -s "$t4096" len-4096 2>&1 | sed -e "s@$t4096@<4096 bytes>@"
test -L len-4096 || echo "len-4096 not created"

echo "== targets are not touched by lookup"
ln -s './/../x//y/./' odd
readlink odd
stat -c '%n %s' odd

echo "== relative targets resolve from the link's directory"
mkdir dir
echo in-dir > dir/target
ln -s target dir/rel
ln -s dir/target via-dir
ln -s dir dir-link
cat dir/rel via-dir dir-link/target
stat -L -c '%n %F' dir/rel dir-link
ls dir-link/ | sort

echo "== dangling links"
ln -s does-not-exist dangling
stat -c '%n %s %F' dangling
readlink dangling
cat dangling
test -e dangling || echo "dangling does not exist"
test -L dangling && echo "dangling is a link"
echo created > does-not-exist
cat dangling
rm does-not-exist
cat dangling

echo "== loops"
ln -s loop-b loop-a
ln -s loop-a loop-b
cat loop-a
ln -s self self
cat self

echo "== readlink of a non-link"
readlink file || echo "readlink failed: $?"
readlink -v file 2>&1

echo "== writing through a link"
echo appended >> short
cat file

echo "== removing links leaves targets"
rm short dir/rel via-dir dir-link one-byte len-100 len-4095 odd dangling loop-a loop-b self
cat file dir/target
ls -A | sort

t_pass
