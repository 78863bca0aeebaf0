/*
 * createmany: create many files, directories, device-less nodes or hard
 * links, Lustre style.
 *
 *   createmany -o|-m|-d|-l tgt [-r unlink_fmt] fmt [start] count
 *   createmany -o|-m|-d|-l tgt [-r unlink_fmt] fmt [start] -seconds
 *
 * fmt is a printf format given the index (a long: %d, %ld, %05d ... all
 * work); without a '%' the index is appended.  -o opens with O_CREAT,
 * -m mknods a regular file, -d mkdirs, -l links tgt.  -r removes the
 * entry named by unlink_fmt after each create.  A last argument -N runs
 * for N seconds instead of a count.  Prints a progress line every 10000
 * creates and a final "total: ..." line.  Exits with the errno of the
 * first failure, 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void usage(const char *prog)
{
	printf("usage: %s {-o|-m|-d|-l<tgt>} [-r altpath ] filenamefmt count\n", prog);
	printf("       %s {-o|-m|-d|-l<tgt>} [-r altpath ] filenamefmt start count\n", prog);
	printf("       %s {-o|-m|-d|-l<tgt>} [-r altpath ] filenamefmt -seconds\n", prog);
	printf("       %s {-o|-m|-d|-l<tgt>} [-r altpath ] filenamefmt start -seconds\n", prog);
	exit(EXIT_FAILURE);
}

/* fmt is user supplied, as in Lustre's createmany */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
static char *get_file_name(const char *fmt, long n, int has_fmt_spec)
{
	static char filename[4096];
	int bytes;

	bytes = has_fmt_spec ? snprintf(filename, sizeof(filename) - 1, fmt, n) :
		snprintf(filename, sizeof(filename) - 1, "%s%ld", fmt, n);
	if (bytes < 0 || bytes >= (int)sizeof(filename) - 1) {
		printf("file name too long\n");
		exit(EXIT_FAILURE);
	}
	return filename;
}

static double now(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1000000;
}

int main(int argc, char **argv)
{
	const long forever = ~0UL >> 1;
	long i;
	long begin = 0;
	long count = forever;
	long end = forever;
	int rc = 0;
	int do_open = 0, do_link = 0, do_mkdir = 0, do_mknod = 0, do_unlink = 0;
	int has_fmt_spec, unlink_has_fmt_spec = 0;
	char *fmt = NULL, *fmt_unlink = NULL, *tgt = NULL;
	char *filename;
	double start, last, elapsed;
	int c;

	/* a last argument of the form -seconds */
	if (argc > 1 && argv[argc - 1][0] == '-') {
		char *endp;

		end = strtol(argv[argc - 1] + 1, &endp, 0);
		if (end > 0 && *endp == '\0') {
			argc--;
			end += time(NULL);
		} else {
			end = forever;
		}
	}

	while ((c = getopt(argc, argv, "omdl:r:")) != -1) {
		switch (c) {
		case 'o':
			do_open++;
			break;
		case 'm':
			do_mknod++;
			break;
		case 'd':
			do_mkdir++;
			break;
		case 'l':
			do_link++;
			tgt = optarg;
			break;
		case 'r':
			do_unlink++;
			fmt_unlink = optarg;
			break;
		default:
			usage(argv[0]);
		}
	}

	if (do_open + do_mkdir + do_link + do_mknod != 1 || do_unlink > 1)
		usage(argv[0]);

	if (end == forever) {
		/* fmt [start] count */
		switch (argc - optind) {
		case 3:
			begin = strtol(argv[optind + 1], NULL, 0);
			count = strtol(argv[optind + 2], NULL, 0);
			break;
		case 2:
			count = strtol(argv[optind + 1], NULL, 0);
			break;
		default:
			usage(argv[0]);
		}
	} else {
		/* fmt [start] -seconds */
		switch (argc - optind) {
		case 2:
			begin = strtol(argv[optind + 1], NULL, 0);
			break;
		case 1:
			break;
		default:
			usage(argv[0]);
		}
	}
	fmt = argv[optind];

	start = last = now();

	has_fmt_spec = strchr(fmt, '%') != NULL;
	if (do_unlink)
		unlink_has_fmt_spec = strchr(fmt_unlink, '%') != NULL;

	for (i = 0; i < count && time(NULL) < end; i++, begin++) {
		filename = get_file_name(fmt, begin, has_fmt_spec);
		if (do_open) {
			int fd = open(filename, O_CREAT | O_RDWR, 0644);

			if (fd < 0) {
				printf("open(%s) error: %s\n", filename, strerror(errno));
				rc = errno;
				break;
			}
			close(fd);
		} else if (do_link) {
			if (link(tgt, filename)) {
				printf("link(%s, %s) error: %s\n", tgt, filename,
				       strerror(errno));
				rc = errno;
				break;
			}
		} else if (do_mkdir) {
			if (mkdir(filename, 0755)) {
				printf("mkdir(%s) error: %s\n", filename, strerror(errno));
				rc = errno;
				break;
			}
		} else {
			if (mknod(filename, S_IFREG | 0444, 0)) {
				printf("mknod(%s) error: %s\n", filename, strerror(errno));
				rc = errno;
				break;
			}
		}

		if (do_unlink) {
			filename = get_file_name(fmt_unlink, begin, unlink_has_fmt_spec);
			if (do_mkdir ? rmdir(filename) : unlink(filename)) {
				printf("unlink(%s) error: %s\n", filename, strerror(errno));
				rc = errno;
				break;
			}
		}

		if (i && (i % 10000) == 0) {
			double t = now();

			printf(" - created %ld (time %.2f total %.2f last %.2f)\n",
			       i, t, t - start, t - last);
			last = t;
		}
	}

	elapsed = now() - start;
	printf("total: %ld creates%s in %.2f seconds: %.2f creates/second\n", i,
	       do_unlink ? "/deletions" : "", elapsed,
	       elapsed > 0 ? (double)i / elapsed : 0.0);

	return rc;
}
