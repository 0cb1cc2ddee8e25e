/* The static hello of the start-up benchmarks: exits at once. */
int main(void) { return 0; }
