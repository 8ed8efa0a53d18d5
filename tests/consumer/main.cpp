/* consumer, as C++ — the headers must give C linkage (extern "C") and
 * compile as C++17 at -Wall -Wextra -Wpedantic -Werror, macros included
 * (tests/consumer/check.sh builds and runs it against the installed
 * library, shared and static). Prints "consumer ok" and exits 0. */
#include <cstdint>
#include <cstdio>
#include <weft.h>

static weft_mutex lock = WEFT_MUTEX_INIT;
static long total;
static int failed; /* &failed: main_fiber's failure result */

static void *add(void *arg)
{
	if (weft_mutex_lock(&lock) != 0)
		return arg;
	total += static_cast<long>(reinterpret_cast<std::uintptr_t>(arg));
	weft_mutex_unlock(&lock);
	weft_yield();
	return nullptr;
}

static void *main_fiber(void *)
{
	weft_task *t[8];
	for (std::uintptr_t i = 0; i < 8; i++)
		if (!(t[i] = weft_spawn(add, reinterpret_cast<void *>(i + 1))))
			return &failed;
	if (weft_gather(t, 8, nullptr) != 0)
		return &failed;
	return total == 36 ? nullptr : &failed;
}

int main()
{
	weft_config cfg;
	weft_config_init(&cfg);
	cfg.workers = 2;
	void *bad = nullptr;
	int r = weft_run(&cfg, main_fiber, nullptr, &bad);
	if (r < 0 || bad) {
		std::fprintf(stderr, "consumer (C++): weft_run %s, total %ld\n",
			     weft_strerror(r), total);
		return 1;
	}
	std::printf("consumer ok (C++, weft %d.%d.%d)\n", WEFT_VERSION_MAJOR,
		    WEFT_VERSION_MINOR, WEFT_VERSION_PATCH);
	return 0;
}
