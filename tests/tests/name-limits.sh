#
# Names of up to 255 bytes work for every kind of entry and for
# renames; 256 bytes is ENAMETOOLONG.  Long names are printed as N255
# and N256.
#

t_require_commands touch mkdir ln mv rm stat sed

umask 022
cd "$T_D0"

n255=$(printf 'n%.0s' $(seq 1 255))
n256=$(printf 'n%.0s' $(seq 1 256))
m255=$(printf 'm%.0s' $(seq 1 255))
l255=$(printf 'l%.0s' $(seq 1 255))
s255=$(printf 's%.0s' $(seq 1 255))

short() {
	sed -e "s/$n256/N256/g" -e "s/$n255/N255/g" -e "s/$m255/M255/g" \
	    -e "s/$l255/L255/g" -e "s/$s255/S255/g"
}

echo "== 255 byte names"
touch "$n255"
mkdir "$m255"
ln "$n255" "$m255/$l255"
ln -s "$n255" "$s255"
echo "through a long symlink" > "$s255"
cat "$n255"
stat -c '%n %F %h' "$n255" "$m255" "$m255/$l255" "$s255" | short
ls | short | sort
stat -c '%s' .

echo "== 255 byte name lookup after dropping caches"
echo 2 > /proc/sys/vm/drop_caches
stat -c '%n %F' "$n255" "$m255/$l255" | short

echo "== rename to and from 255 byte names"
mv "$m255/$l255" "$m255/short"
mv "$m255/short" "$m255/$n255"
ls "$m255" | short
mv "$m255/$n255" "$m255/short"

echo "== 256 byte names are too long"
touch "$n256" 2>&1 | short
mkdir "$n256" 2>&1 | short
ln "$n255" "$n256" 2>&1 | short
ln -s target "$n256" 2>&1 | short
mkfifo "$n256" 2>&1 | short
mv "$n255" "$n256" 2>&1 | short
stat "$n256" 2>&1 | short
ls | short | sort

echo "== 256 byte symlink target is fine"
ln -s "$n256" long-target
readlink long-target | wc -c

echo "== 255 bytes of multibyte characters"
u255=$(printf '\xc3\xa9%.0s' $(seq 1 127))x
u256=$(printf '\xc3\xa9%.0s' $(seq 1 128))
touch "$u255" && echo "created $(printf %s "$u255" | wc -c) byte name"
touch "$u256" 2>/dev/null || echo "$(printf %s "$u256" | wc -c) byte name refused"
rm "$u255"

echo "== cleanup"
rm -rf "$n255" "$m255" "$s255" long-target
ls -A | wc -l
stat -c '%s' .

t_pass
