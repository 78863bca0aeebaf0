#
# renameat2 flags: RENAME_NOREPLACE (-n) and RENAME_EXCHANGE (-x).
#

t_require_commands dumb_renameat2 cat stat mkdir touch

umask 022
cd "$T_D0"

show() {
	local p
	for p in "$@"; do
		if [ -d "$p" ]; then
			echo "$p: dir [$(ls "$p" | tr '\n' ' ')]"
		elif [ -f "$p" ]; then
			echo "$p: file '$(cat "$p")'"
		else
			echo "$p: missing"
		fi
	done
}

echo "== noreplace onto an existing file fails"
echo src > src
echo dst > dst
dumb_renameat2 -n src dst
show src dst

echo "== noreplace onto an existing directory fails"
mkdir dir
dumb_renameat2 -n src dir
show src dir

echo "== noreplace onto a missing name works"
dumb_renameat2 -n src new
show src new

echo "== noreplace of a directory"
mkdir d1 d2
dumb_renameat2 -n d1 d2
dumb_renameat2 -n d1 d3
show d1 d2 d3
rmdir d2 d3

echo "== exchange a file and a directory across directories"
mkdir -p left right
echo "left file" > left/thing
mkdir right/thing
touch right/thing/inside
dumb_renameat2 -x left/thing right/thing
show left/thing right/thing
stat -c '%n %F %h' left right left/thing right/thing
cat left/thing/../thing/inside 2>&1 || true
ls left/thing

echo "== exchanged directory has the new parent as .."
test "$(stat -c %i left/thing/..)" = "$(stat -c %i left)" && \
	echo "left/thing/.. is left"

echo "== exchange back"
dumb_renameat2 -x left/thing right/thing
show left/thing right/thing
stat -c '%n %h' left right

echo "== exchange two files in one directory"
echo a > xa
echo b > xb
dumb_renameat2 -x xa xb
show xa xb

echo "== exchange with a missing target"
dumb_renameat2 -x xa missing
show xa missing

echo "== exchange with a missing source"
dumb_renameat2 -x missing xa
show xa missing

echo "== exchange with itself"
dumb_renameat2 -x xa xa
show xa

echo "== noreplace and exchange together are invalid"
dumb_renameat2 -n -x xa xb
show xa xb

echo "== exchange a directory with its own child"
mkdir -p p/c
dumb_renameat2 -x p p/c
dumb_renameat2 -x p/c p

echo "== cleanup"
rm -rf src dst dir new d1 left right xa xb p
ls -A | wc -l

t_pass
