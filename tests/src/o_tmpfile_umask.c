/*
 * o_tmpfile_umask dir path
 *
 * With umask 022, open an O_TMPFILE in dir with mode 0777, then link it
 * at path.  Prints the umask, the mode fstat shows after the open and
 * the mode stat shows after linkat (upstream's helper of the same name).
 * Linking uses AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH): /proc/self/fd
 * paths can't be linked from every mount namespace.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stat st;
	mode_t old;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s dir path\n", argv[0]);
		return 1;
	}
	umask(022);
	old = umask(022);
	printf("umask 0%03o\n", old);
	fd = open(argv[1], O_TMPFILE | O_RDWR, 0777);
	if (fd < 0) {
		perror("open(O_TMPFILE)");
		return 1;
	}
	if (fstat(fd, &st)) {
		perror("fstat");
		return 1;
	}
	printf("fstat after open(0777): 0%o\n", st.st_mode);
	if (linkat(fd, "", AT_FDCWD, argv[2], AT_EMPTY_PATH)) {
		perror("linkat");
		return 1;
	}
	if (stat(argv[2], &st)) {
		perror("stat");
		return 1;
	}
	printf("stat after linkat: 0%o\n", st.st_mode);
	return 0;
}
