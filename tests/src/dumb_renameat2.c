/*
 * dumb_renameat2 [-n|-x|-w] old new
 *
 * Call renameat2(AT_FDCWD, old, AT_FDCWD, new, flags) with
 * RENAME_NOREPLACE (-n), RENAME_EXCHANGE (-x) and/or RENAME_WHITEOUT (-w).
 * On failure print perror("Error") and exit 1.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef RENAME_WHITEOUT
#define RENAME_WHITEOUT (1 << 2)
#endif

static void exit_usage(void)
{
	printf(" -h/-?  output this usage message and exit\n"
	       " -n     rename with RENAME_NOREPLACE\n"
	       " -x     rename with RENAME_EXCHANGE\n"
	       " -w     rename with RENAME_WHITEOUT\n");
	exit(1);
}

int main(int argc, char **argv)
{
	unsigned int flags = 0;
	long ret;
	int c;

	while ((c = getopt(argc, argv, "+nxwh?")) != -1) {
		switch (c) {
		case 'n':
			flags |= RENAME_NOREPLACE;
			break;
		case 'x':
			flags |= RENAME_EXCHANGE;
			break;
		case 'w':
			flags |= RENAME_WHITEOUT;
			break;
		default:
			exit_usage();
		}
	}

	if (argc - optind != 2)
		exit_usage();

	ret = syscall(SYS_renameat2, AT_FDCWD, argv[optind], AT_FDCWD,
		      argv[optind + 1], flags);
	if (ret) {
		perror("Error");
		return 1;
	}

	return 0;
}
