#
# Quota rules: scoutfs quota-add/-del/-list/-wipe/-restore parsing,
# errors (parse errors on stdout), sorting, duplicates (EEXIST), rules
# differing only in their limit, deleting missing rules (ENOENT), the
# CAP_SYS_ADMIN check, and every mount listing the same rules.
#

t_require_commands scoutfs setpriv
t_require_mounts 2

NONROOT="setpriv --reuid=22222 --regid=44444 --clear-groups"

run()
{
	"$@" 2>&1
	echo "rc $?"
}

echo "== usage"
run scoutfs quota-add -r "1 1,L,- 1,L,- 1,L,- I 1 -"
run scoutfs quota-add -p "$T_M0"
run scoutfs quota-list

echo "== parse errors are printed on stdout"
for r in "" "7" "7 13,L,- 15,L,- 17,L,- I 33" "x 13,L,- 15,L,- 17,L,- I 33 -" \
	 "7 13,X,- 15,L,- 17,L,- I 33 -" "7 13,L,- 15,L,x 17,L,- I 33 -" \
	 "7 13,L,- 15,L,- 17,l,- I 33 -" "7 13,L,- 15,L,- 17,L,- Q 33 -" \
	 "7 13,L,- 15,L,- 17,L,- I 33 c" "7 13;L,- 15,L,- 17,L,- I 33 -"; do
	echo "'$r':"
	scoutfs quota-add -p "$T_M0" -r "$r" 2> /dev/null
	echo "rc $?"
done

echo "== rules are listed sorted, descending"
for r in "7 13,L,- 15,L,- 17,L,- I 33 -" "7 13,L,- 15,L,- 17,L,- D 33 -" \
	 "200 1,U,S 2,L,- 3,L,- I 10 C" "7 13,L,- 15,L,- 18,L,- I 33 -" \
	 "0 0,L,- 0,L,- 0,L,- I 0 -" "7 13,P,S 15,G,- 17,U,- D 18446744073709551615 -" \
	 "   9   100,G,S   0,L,-   0,L,-   I   5   C"; do
	run scoutfs quota-add -p "$T_M0" -r "$r"
done
run scoutfs quota-list -p "$T_M0"

echo "== every mount lists the same rules"
scoutfs quota-list -p "$T_M0" > "$T_TMP.l0"
for m in $(t_fs_nrs); do
	scoutfs quota-list -p "$(t_mount_path "$m")" | diff -u "$T_TMP.l0" - || echo "mount $m differs"
done
echo "unsorted, the same rules: $(scoutfs quota-list -U -p "$T_M0" | sort | \
	diff - <(sort "$T_TMP.l0") > /dev/null && echo yes)"

echo "== an identical rule is EEXIST, another limit is another rule"
run scoutfs quota-add -p "$T_M0" -r "7 13,L,- 15,L,- 17,L,- I 33 -"
run scoutfs quota-add -p "$(t_mount_path 1)" -r "7 13,L,- 15,L,- 17,L,- I 33 -"
run scoutfs quota-add -p "$T_M0" -r "7 13,L,- 15,L,- 17,L,- I 34 -"
run scoutfs quota-list -p "$(t_mount_path 1)"

echo "== deleting"
run scoutfs quota-del -p "$(t_mount_path 1)" -r "7 13,L,- 15,L,- 17,L,- I 34 -"
run scoutfs quota-del -p "$T_M0" -r "7 13,L,- 15,L,- 17,L,- I 34 -"
run scoutfs quota-del -p "$T_M0" -r "7 13,L,- 15,L,- 17,L,- I 33 Q"
run scoutfs quota-list -p "$T_M0"

echo "== rule changes need root, listing does not"
run $NONROOT scoutfs quota-add -p "$T_M0" -r "1 1,L,- 1,L,- 1,L,- I 1 -"
run $NONROOT scoutfs quota-del -p "$T_M0" -r "0 0,L,- 0,L,- 0,L,- I 0 -"
$NONROOT scoutfs quota-list -p "$T_M0" | wc -l

echo "== wipe and restore"
scoutfs quota-list -p "$T_M0" > "$T_TMP.saved"
run scoutfs quota-wipe -p "$(t_mount_path 1)"
run scoutfs quota-list -p "$T_M0"
run scoutfs quota-restore -p "$T_M0" < "$T_TMP.saved"
scoutfs quota-list -p "$T_M0" | diff -u "$T_TMP.saved" - && echo "restored"

echo "== restore reports the rules it could not add"
printf '%s\n' "  7 13,L,- 15,L,- 17,L,- I 33 -" "  5 1,L,- 2,L,- 3,L,- I 4 -" \
	"  5 1,X,- 2,L,- 3,L,- I 4 -" | scoutfs quota-restore -p "$T_M0"
echo "rc $?"
run scoutfs quota-list -p "$T_M0"

scoutfs quota-wipe -p "$T_M0"
run scoutfs quota-list -p "$T_M0"

t_pass
