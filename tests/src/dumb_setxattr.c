/*
 * dumb_setxattr -p path -n name [-v val] [-c] [-r] [-f n] [-s size]
 *
 * Call setxattr(path, name, value, size, flags) with exactly the given
 * arguments, so tests can pass flag and size combinations the attr tools
 * refuse.  -c adds XATTR_CREATE, -r XATTR_REPLACE, -f adds a raw number
 * to the flags.  -s gives a value of size bytes (the -v string repeated,
 * or 'a's), otherwise the value is the -v string (or empty).  Prints
 * "returned 0" or "returned -1 errno N (strerror)".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

static void exit_usage(void)
{
	printf(" -h/-?  output this usage message and exit\n"
	       " -c     add XATTR_CREATE to flags\n"
	       " -f     add parsed number to flags (defaults to 0)\n"
	       " -n     xattr name string\n"
	       " -p     file path to set xattr on\n"
	       " -r     add XATTR_REPLACE to flags\n"
	       " -s     value size, filled with the -v string or 'a' (defaults to strlen(-v))\n"
	       " -v     xattr value string\n");
	exit(1);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	const char *name = NULL;
	const char *val = NULL;
	char *value = NULL;
	size_t size = 0;
	int have_size = 0;
	int flags = 0;
	char *end;
	int ret;
	int c;

	while ((c = getopt(argc, argv, "+cf:n:p:rs:v:h?")) != -1) {
		switch (c) {
		case 'c':
			flags |= XATTR_CREATE;
			break;
		case 'f':
			flags |= (int)strtol(optarg, &end, 0);
			if (*end != '\0') {
				printf("invalid flags: %s\n", optarg);
				exit_usage();
			}
			break;
		case 'n':
			name = optarg;
			break;
		case 'p':
			path = optarg;
			break;
		case 'r':
			flags |= XATTR_REPLACE;
			break;
		case 's':
			size = strtoull(optarg, &end, 0);
			if (*end != '\0') {
				printf("invalid size: %s\n", optarg);
				exit_usage();
			}
			have_size = 1;
			break;
		case 'v':
			val = optarg;
			break;
		default:
			exit_usage();
		}
	}

	if (!path) {
		printf("specify path with -p\n");
		exit_usage();
	}
	if (!name) {
		printf("specify name with -n\n");
		exit_usage();
	}

	if (have_size) {
		size_t vlen = val ? strlen(val) : 0;
		size_t i;

		value = malloc(size ? size : 1);
		if (!value) {
			printf("couldn't allocate %zu byte value\n", size);
			exit(1);
		}
		for (i = 0; i < size; i++)
			value[i] = vlen ? val[i % vlen] : 'a';
	} else if (val) {
		value = strdup(val);
		size = strlen(val);
	}

	ret = setxattr(path, name, value, size, flags);
	if (ret)
		printf("returned %d errno %d (%s)\n", ret, errno, strerror(errno));
	else
		printf("returned %d\n", ret);

	free(value);
	return 0;
}
