#
# An unlinked file stays readable and writable through open file
# descriptors until the last close, and a file with another hard link
# survives losing one name.
#

t_require_commands cat rm ls stat python3

umask 022
cd "$T_D0"

echo "== read an unlinked file through an open fd"
echo "still here" > file
exec 3< file
rm file
ls -A
cat <&3
stat -L -c 'links %h size %s' /proc/self/fd/3
exec 3<&-
ls -A | wc -l

echo "== write and read an unlinked file"
python3 - file2 <<'PYEOF'
import os, sys
name = sys.argv[1]
fd = os.open(name, os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"before unlink\n")
os.unlink(name)
print("exists after unlink:", os.path.exists(name))
os.write(fd, b"after unlink\n" * 1000)
st = os.fstat(fd)
print("nlink", st.st_nlink, "size", st.st_size)
os.lseek(fd, 0, os.SEEK_SET)
data = os.read(fd, 1 << 20)
print("read", len(data), "bytes, first line:", data.split(b"\n")[0].decode())
os.ftruncate(fd, 5)
print("truncated size", os.fstat(fd).st_size)
os.close(fd)
PYEOF
ls -A | wc -l

echo "== a new file can take the unlinked name"
echo old > file3
exec 4< file3
rm file3
echo new > file3
cat file3
cat <&4
exec 4<&-
rm file3

echo "== hard linked file unlinked once"
echo linked > a
ln a b
exec 5< a
rm a
stat -c '%n %h' b
cat b
cat <&5
exec 5<&-
rm b
ls -A | wc -l

echo "== rename over an open file"
echo replaced > target
echo replacement > source
exec 6< target
mv source target
cat target
cat <&6
exec 6<&-
rm target

echo "== unlinked directory"
mkdir dir
cd dir
rmdir ../dir
touch file 2>&1 | sed -e 's/^touch: .*: /touch: /'
cd "$T_D0"
ls -A | wc -l

t_pass
