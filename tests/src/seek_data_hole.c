/*
 * seek_data_hole file
 *
 * Print the file's data and hole regions as SEEK_DATA/SEEK_HOLE find
 * them, from offset 0 to its size: "data OFF..END" and "hole OFF..END"
 * lines, then "size N".  A seek that fails other than with ENXIO at the
 * end prints the errno and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stat st;
	off_t pos = 0, data, hole;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s file\n", argv[0]);
		return 1;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st)) {
		perror(argv[1]);
		return 1;
	}
	while (pos < st.st_size) {
		data = lseek(fd, pos, SEEK_DATA);
		if (data < 0) {
			if (errno != ENXIO) {
				printf("SEEK_DATA %lld: errno %d (%s)\n", (long long)pos, errno,
				       strerror(errno));
				return 1;
			}
			data = st.st_size;
		}
		if (data > pos)
			printf("hole %lld..%lld\n", (long long)pos, (long long)data);
		if (data >= st.st_size)
			break;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0) {
			printf("SEEK_HOLE %lld: errno %d (%s)\n", (long long)data, errno,
			       strerror(errno));
			return 1;
		}
		printf("data %lld..%lld\n", (long long)data, (long long)hole);
		pos = hole;
	}
	if (lseek(fd, st.st_size, SEEK_DATA) >= 0 || errno != ENXIO)
		printf("SEEK_DATA at size: not ENXIO\n");
	printf("size %lld\n", (long long)st.st_size);
	return 0;
}
