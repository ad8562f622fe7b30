console.log('asdf'.split('').reverse().join(''));
