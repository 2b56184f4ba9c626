#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <time.h>
#include <pthread.h>
static void* idle(void*a){ for(;;) pause(); return 0;}
static void* spin(void*a){ volatile long x=0; for(;;) x++; return 0;}
int main(int argc,char**argv){
  pthread_t t; if(argc>1 && argv[1][0]=='s') pthread_create(&t,0,spin,0); else pthread_create(&t,0,idle,0);
  syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
  struct timespec a,b; int n=200000;
  clock_gettime(CLOCK_MONOTONIC,&a);
  for(int i=0;i<n;i++) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  clock_gettime(CLOCK_MONOTONIC,&b);
  printf("%.3f us per membarrier\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/n/1000.0);
  clock_gettime(CLOCK_MONOTONIC,&a);
  for(int i=0;i<n;i++) syscall(__NR_getppid);
  clock_gettime(CLOCK_MONOTONIC,&b);
  printf("%.3f us per getppid\n", ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/n/1000.0);
  return 0;}
