/* skynet: a tree of fibers, 10 children per node, N leaves; each leaf
 * returns its number, each node the sum of its children. */
#include "bench.h"

struct node {
	unsigned long long num, size;
};

static void *skynet(void *arg)
{
	struct node *n = arg;
	if (n->size == 1)
		return (void *)(uintptr_t)n->num;
	struct node kids[10];
	weft_task *t[10];
	unsigned long long sub = n->size / 10;
	for (int i = 0; i < 10; i++) {
		kids[i].num = n->num + (unsigned long long)i * sub;
		kids[i].size = sub;
		if (!(t[i] = weft_spawn(skynet, &kids[i])))
			abort();
	}
	unsigned long long sum = 0;
	for (int i = 0; i < 10; i++) {
		void *r;
		if (weft_join(t[i], &r))
			abort();
		sum += (uintptr_t)r;
	}
	return (void *)(uintptr_t)sum;
}

static unsigned long long N, sum;
static double secs;

static void *run(void *arg)
{
	(void)arg;
	struct node root = {0, N};
	double t0 = bench_secs();
	sum = (uintptr_t)skynet(&root);
	secs = bench_secs() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	N = bench_arg(argc, argv, 1000000);
	bench_run(run, NULL);
	if (sum != N * (N - 1) / 2) {
		fprintf(stderr, "skynet: wrong sum %llu\n", sum);
		return 1;
	}
	fprintf(stderr, "skynet sum %llu\n", sum);
	bench_result("skynet", N, secs);
	return 0;
}
