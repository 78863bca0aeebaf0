#
# rename(2) of files and directories: within and across directories,
# replacing files and empty directories, and the errors for non-empty
# targets, type mismatches and moving a directory into its own subtree.
# dumb_renameat2 with no flags is a plain renameat2 that prints the
# errno text.
#

t_require_commands mv cat stat mkdir touch ln dumb_renameat2

umask 022
cd "$T_D0"

listing() {
	find . -mindepth 1 -printf '%p %y %n\n' | sort
}

echo "== rename within a directory"
mkdir a b
echo one > a/one
mv a/one a/uno
cat a/uno
test -e a/one || echo "a/one is gone"

echo "== rename across directories"
mv a/uno b/eins
cat b/eins
listing

echo "== rename onto an existing file replaces it"
echo two > a/two
ln a/two a/two-link
echo victim > b/victim
ln b/victim b/victim-link
stat -c '%n %h' a/two b/victim b/victim-link
mv a/two b/victim
cat b/victim
cat b/victim-link
stat -c '%n %h' b/victim b/victim-link a/two-link
test "$(stat -c %i b/victim)" = "$(stat -c %i a/two-link)" && \
	echo "b/victim is the old a/two"

echo "== rename onto itself and onto another link of itself"
dumb_renameat2 b/victim b/victim
cat b/victim
dumb_renameat2 b/victim a/two-link
ls a b
stat -c '%n %h' b/victim a/two-link

echo "== rename a directory onto an empty directory"
mkdir -p a/dir/sub b/empty
echo deep > a/dir/sub/file
dumb_renameat2 a/dir b/empty
cat b/empty/sub/file
stat -c '%n %h' a b b/empty
test -e a/dir || echo "a/dir is gone"

echo "== rename a directory onto a non-empty directory"
mkdir a/full a/src
touch a/full/file
dumb_renameat2 a/src a/full
mv -T a/src a/full 2>&1 | t_filter_fs
ls a/full

echo "== type mismatches"
touch a/file
dumb_renameat2 a/src a/file
dumb_renameat2 a/file a/src

echo "== rename a directory into its own subtree"
mkdir -p a/top/mid/bot
dumb_renameat2 a/top a/top/mid/bot/top
dumb_renameat2 a/top a/top/top
dumb_renameat2 a/top/mid a/top/mid/bot/x
test -d a/top/mid/bot && echo "a/top/mid/bot still there"

echo "== rename onto an ancestor"
dumb_renameat2 a/top/mid/bot a/top

echo "== missing source, missing target directory"
dumb_renameat2 a/nope a/nope2
dumb_renameat2 a/file a/nodir/file

echo "== rename . and .."
dumb_renameat2 a/top/. a/x
dumb_renameat2 a/top/.. a/x

echo "== final tree"
listing

echo "== cleanup"
rm -rf a b

t_pass
