/*
 * getdents_offsets DIR [SEEK_POS]
 *
 * Lists a directory with the raw getdents64 syscall and prints, for every record,
 * its name, d_type and d_off (the offset a seek must use to resume after it), so
 * tests can check scoutfs's readdir positions.  With SEEK_POS, seeks there first.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

int main(int argc, char **argv)
{
	char buf[65536];
	long nread;
	int fd;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s DIR [SEEK_POS]\n", argv[0]);
		return 1;
	}
	fd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	if (argc == 3 && lseek(fd, strtoll(argv[2], NULL, 0), SEEK_SET) < 0) {
		perror("lseek");
		return 1;
	}
	while ((nread = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		for (long pos = 0; pos < nread;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + pos);

			printf("%s type %u d_off 0x%08llx\n", d->d_name, d->d_type,
			       (unsigned long long)d->d_off);
			pos += d->d_reclen;
		}
	}
	if (nread < 0) {
		perror("getdents64");
		return 1;
	}
	close(fd);
	return 0;
}
