/*
 * o_tmpfile_linkat dir path [bytes]
 *
 * Open an O_TMPFILE in dir, write `bytes` bytes (default 4096) of a
 * pattern to it, check its link count is 0, link it at path (with
 * AT_EMPTY_PATH: needs CAP_DAC_READ_SEARCH) and check the count is 1.
 * Prints nothing on success; perror() and exit 1 on a failure.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stat st;
	char buf[4096];
	long left;
	int fd;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: %s dir path [bytes]\n", argv[0]);
		return 1;
	}
	left = argc == 4 ? atol(argv[3]) : 4096;
	fd = open(argv[1], O_TMPFILE | O_RDWR, 0644);
	if (fd < 0) {
		perror("open(O_TMPFILE)");
		return 1;
	}
	for (int i = 0; i < (int)sizeof(buf); i++)
		buf[i] = 'a' + i % 26;
	while (left > 0) {
		long n = left < (long)sizeof(buf) ? left : (long)sizeof(buf);

		if (write(fd, buf, n) != n) {
			perror("write");
			return 1;
		}
		left -= n;
	}
	if (fstat(fd, &st) || st.st_nlink != 0) {
		fprintf(stderr, "nlink %lu before linkat\n", (unsigned long)st.st_nlink);
		return 1;
	}
	if (linkat(fd, "", AT_FDCWD, argv[2], AT_EMPTY_PATH)) {
		perror("linkat");
		return 1;
	}
	if (fstat(fd, &st) || st.st_nlink != 1) {
		fprintf(stderr, "nlink %lu after linkat\n", (unsigned long)st.st_nlink);
		return 1;
	}
	return 0;
}
